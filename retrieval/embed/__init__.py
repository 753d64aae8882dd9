"""Embedding: images to vectors with TTA, whitening, backbone fusion, shards and feature files."""
