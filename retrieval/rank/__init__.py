"""Ranking: kNN search, top-k, the re-ranking steps, fold fusion and the ranking file."""
