"""The submission file: validate, write, read, and score it against ground truth.

Format: a CSV file with the header ``query_id,reference_ids`` and one row per query, the
reference ids ranked best first and joined by single spaces (an empty ranking is an empty
field). Ids therefore may not be empty nor contain whitespace, commas or double quotes;
writing refuses such an id rather than producing a file that reads back differently.

Ground truth is a directory holding ``query.csv`` and ``reference.csv``, each with the
columns ``id,label``.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from retrieval.io import InputError, atomic_path
from retrieval.metrics import PAD, retrieval_metrics

MAX_IDS = 1000
HEADER = ("query_id", "reference_ids")
_FORBIDDEN = (",", '"')


class SubmissionError(InputError):
    """A submission (or the rankings meant for one) that breaks the format or the truth's ids."""


def validate(rankings: Mapping[str, Sequence[str]], query_ids: Iterable[str], reference_ids: Iterable[str],
             max_ids: int = MAX_IDS) -> None:
    """Raise :class:`SubmissionError` unless ``rankings`` ranks exactly the ``query_ids``.

    Faults, checked per query in sorted query-id order: a listed query with no ranking, a
    ranking for an unknown query, more than ``max_ids`` reference ids, a reference id repeated
    within one ranking, a reference id not in ``reference_ids``. The message reports the
    first fault found and, when more than one query has faults, how many do.
    """
    expected = _unique_query_ids(query_ids)
    references = set(reference_ids)
    faults = []
    for qid in sorted(set(expected) | set(rankings), key=str):
        fault = _query_fault(qid, rankings.get(qid), qid in expected, references, max_ids)
        if fault:
            faults.append(fault)
    if faults:
        more = f" ({len(faults)} queries have faults)" if len(faults) > 1 else ""
        raise SubmissionError(faults[0] + more)


def _unique_query_ids(query_ids: Iterable[str]) -> dict[str, None]:
    """The query ids in order, refusing one listed twice (it would make two rows)."""
    ids = list(query_ids)
    counts = Counter(ids)
    repeated = [q for q in ids if counts[q] > 1]
    if repeated:
        raise SubmissionError(f"query id {repeated[0]!r} is listed {counts[repeated[0]]} times")
    return dict.fromkeys(ids)


def _query_fault(qid: str, ranking: Sequence[str] | None, expected: bool, references: set,
                 max_ids: int) -> str | None:
    """The first fault of one query's ranking as a message, or None if it has none."""
    if ranking is None:
        return f"query {qid!r} is missing"
    if not expected:
        return f"unknown query {qid!r}"
    if isinstance(ranking, (str, bytes)):
        return f"query {qid!r}: the ranking must be a sequence of ids, not a single string"
    if len(ranking) > max_ids:
        return f"query {qid!r}: {len(ranking)} reference ids, more than the limit of {max_ids}"
    if len(set(ranking)) != len(ranking):
        rid, n = next((r, n) for r, n in Counter(ranking).items() if n > 1)
        return f"query {qid!r}: reference {rid!r} appears {n} times"
    unknown = [r for r in ranking if r not in references]
    if unknown:
        extra = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        return f"query {qid!r}: unknown reference {_cut(unknown[0])}{extra}"
    return None


def _cut(value: str, n: int = 60) -> str:
    """``repr(value)``, cut to about ``n`` characters for a one-line message."""
    return repr(value) if len(value) <= n else f"{value[:n]!r}... ({len(value)} characters)"


def _id_fault(value: str) -> str | None:
    """Why ``value`` cannot be written as an id of the format, or None if it can."""
    if value == "":
        return "is empty"
    if any(ch.isspace() for ch in value) or any(ch in value for ch in _FORBIDDEN):
        return "contains a space, comma, double quote or other separator the format cannot represent"
    return None


def _check_representable(rankings: Mapping[str, Sequence[str]], query_ids: Sequence[str]) -> None:
    """Refuse a query or reference id that the space-separated CSV format cannot hold."""
    for qid in query_ids:
        fault = _id_fault(str(qid))
        if fault:
            raise SubmissionError(f"query id {str(qid)!r} {fault}")
        for rid in rankings[qid]:
            fault = _id_fault(str(rid))
            if fault:
                raise SubmissionError(f"query {str(qid)!r}: reference id {str(rid)!r} {fault}")


def write_submission(path: str | os.PathLike, rankings: Mapping[str, Sequence[str]], query_ids: Iterable[str],
                     reference_ids: Iterable[str], max_ids: int = MAX_IDS) -> None:
    """Validate ``rankings`` and write them to ``path`` atomically, one row per query in ``query_ids`` order.

    Nothing is written (and an existing file is left alone) if validation fails or an id
    cannot be represented in the format.
    """
    query_ids = list(query_ids)
    validate(rankings, query_ids, reference_ids, max_ids)
    _check_representable(rankings, query_ids)
    lines = [",".join(HEADER)]
    lines += [f"{qid},{' '.join(str(r) for r in rankings[qid])}" for qid in query_ids]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_submission(path: str | os.PathLike) -> dict[str, list[str]]:
    """Parse a submission file into ``{query_id: [reference ids, best first]}`` in row order.

    Row numbers in messages are file line numbers (the header is row 1). Blank lines are
    skipped. Raises :class:`SubmissionError` for a missing or unreadable file, a wrong header,
    a row without exactly two fields, an empty query id, or a query id in two rows.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SubmissionError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SubmissionError(f"{path}: cannot read: {err}") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None or tuple(field.strip() for field in header) != HEADER:
        raise SubmissionError(f"{path}: row 1: header must be {','.join(HEADER)!r}, got {','.join(header or [])!r}")
    rankings: dict[str, list[str]] = {}
    first_row: dict[str, int] = {}
    for row in rows:
        if row:
            qid, ids = _submission_row(path, row, rows.line_num, first_row)
            rankings[qid] = ids
    return rankings


def _submission_row(path: Path, row: list[str], line: int, first_row: dict[str, int]) -> tuple[str, list[str]]:
    """One submission row's query id and reference ids; ``first_row``: each query id's row so far."""
    if len(row) != 2:
        raise SubmissionError(f"{path}: row {line}: expected 2 fields (query_id,reference_ids), got {len(row)}")
    qid = row[0].strip()
    if not qid:
        raise SubmissionError(f"{path}: row {line}: empty query id")
    if qid in first_row:
        raise SubmissionError(f"{path}: query {qid!r} appears in rows {first_row[qid]} and {line}")
    first_row[qid] = line
    if "," in row[1]:  # a quoted field of comma-joined ids: one unknown id thousands of characters long
        raise SubmissionError(f"{path}: row {line}: reference ids are separated by spaces, not commas: "
                              f"{_cut(row[1])}")
    return qid, row[1].split()


def read_truth(directory: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """``(query_labels, ref_labels)``: ``{id: label}`` from ``query.csv`` and ``reference.csv`` in ``directory``.

    Both files need the columns ``id`` and ``label`` (further columns are ignored); values are
    read as strings, verbatim. Raises :class:`InputError` naming the file if it is missing,
    unparsable, lacks a column, or holds an empty, space-padded or repeated id.
    """
    directory = Path(directory)
    if not directory.exists():
        raise InputError(f"{directory}: no such truth directory")
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory (the truth is a directory with query.csv and reference.csv)")
    return _read_labels(directory / "query.csv"), _read_labels(directory / "reference.csv")


def _read_labels(path: Path) -> dict[str, str]:
    """``{id: label}`` of one truth file, checked."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot parse: {err}") from None
    missing = [c for c in ("id", "label") if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: needs columns id,label; missing {','.join(missing)} "
                         f"(has {','.join(map(str, frame.columns))})")
    ids = frame["id"]
    if (ids == "").any():
        raise InputError(f"{path}: row {int(np.flatnonzero(ids == '')[0]) + 2}: empty id")
    padded = ids != ids.str.strip()
    if padded.any():
        row = int(np.flatnonzero(padded)[0])
        raise InputError(f"{path}: row {row + 2}: id {ids.iloc[row]!r} has surrounding spaces, which no "
                         "submission id can have; fix the truth file")
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise InputError(f"{path}: id {repeated.iloc[0]!r} appears {int((ids == repeated.iloc[0]).sum())} times")
    return dict(zip(ids, frame["label"]))


def score_submission(rankings: Mapping[str, Sequence[str]], query_labels: Mapping[str, str],
                     ref_labels: Mapping[str, str], k: int) -> dict:
    """``{"map@<k>", "p@1", "n_queries"}`` of ``rankings`` against the truth labels.

    Every truth query must be ranked and every ranked reference must be a truth reference
    (:func:`validate`, allowing ``max(MAX_IDS, k)`` ids per query); ranks beyond ``k`` are
    ignored. A query's number of relevant references counts the whole truth reference set.
    """
    return retrieval_metrics(*truth_ranking(rankings, query_labels, ref_labels, k), k)


def truth_ranking(rankings: Mapping[str, Sequence[str]], query_labels: Mapping[str, str],
                  ref_labels: Mapping[str, str], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ranked, query_label_array, ref_label_array)`` of ``rankings``, validated as in
    :func:`score_submission`: ``[Q, <=k]`` reference indices (``-1`` = padding), rows in the
    truth's query order, columns indexing the truth's references in their order.
    """
    validate(rankings, query_labels, ref_labels, max(MAX_IDS, k))
    ranked = _index_matrix([rankings[q] for q in query_labels], {r: i for i, r in enumerate(ref_labels)}, k)
    return ranked, _label_array(query_labels), _label_array(ref_labels)


def _label_array(labels: Mapping[str, str]) -> np.ndarray:
    """The labels of an ``{id: label}`` mapping in its order, as an object array."""
    return np.array(list(labels.values()), dtype=object)


def _index_matrix(lists: Sequence[Sequence[str]], index: Mapping[str, int], k: int) -> np.ndarray:
    """``[Q, K]`` int64 reference indices of the first ``k`` ids of each list, padded with -1."""
    width = min(k, max((len(ids) for ids in lists), default=0))
    ranked = np.full((len(lists), width), PAD, dtype=np.int64)
    for row, ids in zip(ranked, lists):
        head = [index[r] for r in ids[:width]]
        row[: len(head)] = head
    return ranked
