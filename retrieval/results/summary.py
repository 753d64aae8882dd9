"""The run in a few lines, what ``make repro`` prints last: how good, did training help, where
the time went, where the files are.

:func:`read_stage_metrics` reads each stage's metrics file (a JSON object; one per fold for the
fold stages); :func:`summary_lines` builds the lines from their contents alone, so a golden test
pins them. Every stage's metrics carry ``wall`` (:mod:`retrieval.timing`); the ensemble's carry
the pooled validation mAP@1000, its bootstrap intervals and each fold's figure; train's the
validation mAP@1000 of epoch 0 (the start) and of the weights kept.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from retrieval.io import InputError
from retrieval.metrics import MAP, N_QUERIES, P1, VAL_MAP

STAGES = ("demo", "check", "split", "train", "extract", "rerank", "ensemble", "report")  # pipeline order
FOLD_STAGES = ("train", "extract", "rerank")  # one metrics file per fold
BEFORE_REPORT = STAGES[:-1]  # the stages whose wall time the report shows
MAX_LINES = 15
START = {"pypi": "ImageNet start", "timm": "ImageNet start", "none": "untrained start"}  # model.pretrained


def read_metrics(path: str | Path) -> dict:
    """One metrics file: a JSON object, or a one-line :class:`InputError` naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such metrics file; run its stage (dvc repro)") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable JSON metrics file ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a metrics file holds a JSON object, not {type(data).__name__}")
    return data


def read_stage_metrics(paths: Mapping[str, Sequence[str | Path]]) -> dict[str, list[dict]]:
    """``{stage: [its metrics, one per file]}`` for ``{stage: [paths]}``; each checked to hold a
    wall time."""
    out = {}
    for stage, files in paths.items():
        out[stage] = [read_metrics(f) for f in files]
        for f, m in zip(files, out[stage]):
            if not isinstance(m.get("wall"), dict) or "seconds" not in m["wall"]:
                raise InputError(f"{f}: no wall.seconds (written by an older version?); rerun stage {stage}")
    return out


def duration(seconds: float) -> str:
    """``2.4s``, ``42s``, ``3m07s``, ``1h05m``: a wall time at the precision that matters."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


def stage_seconds(metrics: Mapping[str, Sequence[dict]]) -> dict[str, float]:
    """Each stage's wall time in seconds, its folds' runs added up, in pipeline order."""
    order = [s for s in STAGES if s in metrics] + [s for s in metrics if s not in STAGES]
    return {s: float(sum(m["wall"]["seconds"] for m in metrics[s])) for s in order}


def training_phrase(train: dict, start: str) -> str:
    """Whether training beat epoch 0 in one fold's train metrics, with both figures."""
    members = train.get("members") or {"": train}
    parts = []
    for name, m in members.items():
        e0, kept = m[f"epoch0_{VAL_MAP}"], m[VAL_MAP]
        which = f"WiSE mix {m['wise_alpha']:g}" if m.get("wise_alpha") is not None else f"epoch {m['best_epoch']}"
        label = f"{name} " if name else ""
        if m["best_epoch"] > 0:  # a WiSE-FT mix kept is recorded as the last epoch
            parts.append(f"{label}{e0:.4f} (epoch 0) -> {kept:.4f} ({which} kept)")
        else:
            parts.append(f"{label}{e0:.4f} (epoch 0 kept)")
    helped = all(m["best_epoch"] > 0 for m in members.values())
    return f"training {'beat' if helped else 'did NOT beat'} its {start}: " + "; ".join(parts)


def summary_lines(metrics: Mapping[str, Sequence[dict]], folds: Sequence[int], pretrained: str,
                  submission: str | Path, report: str | Path) -> list[str]:
    """The summary, at most :data:`MAX_LINES` lines: the cross-validated mAP@1000 with its 95%
    interval (the class bootstrap's: a class's queries share references), each fold's figure
    and whether its training beat epoch 0, each stage's wall time and the submission's and
    report's paths. ``metrics``: :func:`read_stage_metrics`'s result,
    fold stages in ``folds`` order; ``pretrained``: model.pretrained (names the start)."""
    cv = metrics["ensemble"][0]["cv"]
    start = START.get(pretrained, "pretrained start")
    lines = [f"validation mAP@1000  {cv[MAP]:.4f}  (95% interval {cv[MAP + '_class_ci95_lo']:.4f}-"
             f"{cv[MAP + '_class_ci95_hi']:.4f}, classes resampled)  P@1 {cv[P1]:.4f}  {cv[N_QUERIES]} queries"]
    fold_lines = [f"  fold {f}  {cv['fold_' + MAP][str(f)]:.4f}   {training_phrase(t, start)}"
                  for f, t in zip(folds, metrics["train"])]
    room = MAX_LINES - 5
    if len(fold_lines) > room:  # many folds: the first ones, and where the rest are
        fold_lines = fold_lines[:room - 1] + [f"  ... {len(fold_lines) - room + 1} more folds: dvc metrics show"]
    seconds = stage_seconds(metrics)
    walls = ", ".join(f"{s} {duration(t)}" for s, t in seconds.items())
    ensemble = metrics["ensemble"][0]
    return lines + fold_lines + [
        f"wall time  {duration(sum(seconds.values()))} in all: {walls}",
        f"submission  {submission} ({ensemble['test_queries']} test queries)",
        f"report      {report}",
        "more        dvc metrics show (every figure), dvc plots show (training curves)",
    ]
