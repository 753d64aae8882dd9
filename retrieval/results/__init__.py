"""Results: the submission, per-query scores, the bootstrap, the report and searching new images."""
