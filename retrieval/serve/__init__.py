"""The search service: an HTTP API and a page over a reference bundle (``python -m stages.serve``)."""
