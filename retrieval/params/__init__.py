"""The sections of ``params.yaml``, by pipeline phase; ``retrieval.config`` puts them together."""
