"""Model: the embedding network, its losses, checkpoints and pretrained weights."""
