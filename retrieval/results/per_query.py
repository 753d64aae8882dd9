"""Per-query score files: one row per query with its AP and whether its first hit is right.

A CSV with the columns ``query_id,label,ap,p@1`` (and ``fold`` first in the ensemble's pooled
file): ``ap`` is the query's AP@k (k = 1000 in the pipeline; ``stages.score --k``), ``p@1`` is 1
when its first ranked reference has its label, else 0. The mean of ``ap`` is the mAP and the mean
of ``p@1`` the P@1 of the ranking it came from. Floats are written in full (round-trip) precision.
Written by ``rerank`` (validation queries), ``ensemble`` (all folds pooled) and ``score --per-query``
(test queries); read by ``ensemble`` and ``stages.compare``.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from retrieval.io import InputError, atomic_path
from retrieval.metrics import MAP, N_QUERIES, P1, per_query_metrics

QUERY_ID = "query_id"
LABEL = "label"
AP = "ap"
FOLD = "fold"
COLUMNS = (QUERY_ID, LABEL, AP, P1)


def per_query_frame(query_ids: Sequence[str], labels: Sequence[str], ap: np.ndarray,
                    first_hit: np.ndarray) -> pd.DataFrame:
    """The per-query table, rows in the given query order."""
    return pd.DataFrame({QUERY_ID: np.asarray(query_ids, dtype=str), LABEL: np.asarray(labels, dtype=str),
                         AP: np.asarray(ap, dtype=np.float64), P1: np.asarray(first_hit).astype(np.int64)})


def ranking_per_query(ranked: np.ndarray, query_ids: Sequence[str], query_labels: Sequence[str],
                      ref_labels: Sequence[str], k: int) -> pd.DataFrame:
    """The per-query table of a ranking ``[Q, K]`` of reference indices
    (:func:`retrieval.metrics.per_query_metrics`); its means are that ranking's mAP@k and P@1 (``k``: the
    cut-off, :data:`retrieval.metrics.MAP_K` for the pipeline's mAP)."""
    ap, first_hit = per_query_metrics(ranked, query_labels, ref_labels, k)
    return per_query_frame(query_ids, query_labels, ap, first_hit)


def validation_per_query(valid, ranked: np.ndarray, k: int) -> pd.DataFrame:
    """The per-query table of a validation ranking: ``valid`` is a :class:`retrieval.embed.feature_file.Features`
    with labels and roles, ``ranked`` ranks its ``reference`` rows for its ``query`` rows, in file order
    (as :func:`retrieval.rank.chain.validation_rankings` does)."""
    q = valid.roles == "query"
    return ranking_per_query(ranked, valid.ids[q], valid.labels[q], valid.labels[~q], k)


def write_per_query(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write ``frame`` to ``path`` atomically as CSV, floats in round-trip precision."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_per_query(path: str | os.PathLike, required: Sequence[str] = (QUERY_ID, AP)) -> pd.DataFrame:
    """A per-query file, checked: it must exist, parse and hold the ``required`` columns, each
    query id once and not empty, ``ap`` values (float64) in [0, 1] and ``p@1`` values (int64) 0
    or 1, where those columns are present.

    Ids and labels are read as strings, verbatim. Raises :class:`InputError` naming the file.
    """
    path = Path(path)
    frame = _read_csv(path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: needs columns {','.join(required)}; missing {','.join(missing)} "
                         f"(has {','.join(map(str, frame.columns))})")
    _check_ids(path, frame[QUERY_ID])
    if AP in frame.columns:
        frame[AP] = _checked_numbers(path, frame[AP], AP, lambda v: (v >= 0) & (v <= 1), "a number in [0, 1]")
    if P1 in frame.columns:
        frame[P1] = _checked_numbers(path, frame[P1], P1, lambda v: np.isin(v, (0, 1)), "0 or 1").astype(np.int64)
    return frame


def paired_ap(path_a: str | os.PathLike, path_b: str | os.PathLike
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(query_ids, ap_a, ap_b, labels)`` of two per-query files over the same queries, sorted by
    query id; ``labels`` is None unless both files have a ``label`` column.

    Raises :class:`InputError` naming the file for a fault of either file (:func:`read_per_query`),
    naming file B for query ids (or labels) that differ from file A's, and naming file A if it
    has no rows.
    """
    a, b = (read_per_query(p).set_index(QUERY_ID) for p in (path_a, path_b))
    _check_same_ids(path_a, a.index, path_b, b.index)
    if a.empty:
        raise InputError(f"{path_a}: no queries to compare")
    ids = np.sort(a.index.to_numpy(dtype=str))
    a, b = a.loc[ids], b.loc[ids]
    return ids, a[AP].to_numpy(), b[AP].to_numpy(), _same_labels(path_a, a, path_b, b)


def _same_labels(path_a, a: pd.DataFrame, path_b, b: pd.DataFrame) -> np.ndarray | None:
    """The queries' labels where both tables (rows in one order) have them, refusing any that differ."""
    if LABEL not in a.columns or LABEL not in b.columns:
        return None
    differ = a[LABEL].to_numpy() != b[LABEL].to_numpy()
    if differ.any():
        q = a.index[int(np.flatnonzero(differ)[0])]
        raise InputError(f"{path_b}: query {q!r} has label {b[LABEL][q]!r}, {path_a} has {a[LABEL][q]!r} "
                         f"({int(differ.sum())} labels differ)")
    return a[LABEL].to_numpy(dtype=str)


def _check_same_ids(path_a, ids_a: pd.Index, path_b, ids_b: pd.Index) -> None:
    """Refuse two id sets that differ, naming a few ids missing on each side and the counts."""
    only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
    if only_a or only_b:
        raise InputError(f"{path_b}: query ids differ from {path_a}'s: {len(only_a)} of its {len(ids_a)} are missing "
                         f"here{_few(only_a)}, {len(only_b)} of the {len(ids_b)} here are not in it{_few(only_b)}")


def _few(ids: Sequence[str], shown: int = 3) -> str:
    """`` (id, id, id, ...)`` naming the first ``shown`` ids, or nothing for no ids."""
    if not ids:
        return ""
    return f" ({', '.join(map(repr, ids[:shown]))}{', ...' if len(ids) > shown else ''})"


def pool_folds(frames: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """One table of several folds' per-query tables, ``fold`` first, folds in the given order."""
    return pd.concat([f.assign(**{FOLD: fold})[[FOLD, *f.columns]] for fold, f in frames.items()], ignore_index=True)


def check_matches_metrics(path: str | os.PathLike, frame: pd.DataFrame, metrics: Mapping[str, float],
                          source: str) -> None:
    """Refuse a per-query table whose query count or mean AP@1000 differs from ``metrics``
    (``n_queries``, ``map@1000``, read from ``source``): one of the two files is stale."""
    n, mean = len(frame), float(frame[AP].mean()) if len(frame) else 0.0
    if n != metrics[N_QUERIES] or abs(mean - metrics[MAP]) > 1e-9:
        raise InputError(f"{path}: {n} queries with mean {AP} {mean:.6f}, but {source} has {metrics['n_queries']} "
                         f"with {MAP} {metrics[MAP]:.6f}; re-run rerank")


def _read_csv(path: Path) -> pd.DataFrame:
    """The file as strings, or :class:`InputError` if it is missing or cannot be parsed."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot parse: {err}") from None


def _check_ids(path: Path, ids: pd.Series) -> None:
    """Refuse an empty query id or one listed twice, naming the first."""
    if (ids == "").any():
        raise InputError(f"{path}: row {int(np.flatnonzero(ids == '')[0]) + 2}: empty {QUERY_ID}")
    repeated = [(q, n) for q, n in Counter(ids).items() if n > 1]
    if repeated:
        raise InputError(f"{path}: {QUERY_ID} {repeated[0][0]!r} appears {repeated[0][1]} times"
                         f" ({len(repeated)} ids repeated)")


def _checked_numbers(path: Path, column: pd.Series, name: str, ok, what: str) -> np.ndarray:
    """``column`` as float64, refusing the first value that is not a number or fails ``ok``."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~ok(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path}: row {row + 2}: {name} {column.iloc[row]!r} is not {what}")
    return values
