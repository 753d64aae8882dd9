"""The report's account of the run: each fold's validation curve and re-ranking ablation, and
each stage's wall time, as inline SVG charts (:mod:`retrieval.results.charts`) in one HTML section.

Reads train's history.csv and metrics, rerank's ablation.csv and every earlier stage's metrics
(their ``wall``). A fold's missing history or ablation is skipped with a log line and counted
(the page says so too); a file that is there but lacks its columns is refused.
"""
from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from retrieval.io import InputError
from retrieval.metrics import MAP, VAL_MAP
from retrieval.results.charts import ablation_chart, curve_chart, wall_chart
from retrieval.results.summary import FOLD_STAGES, duration, read_stage_metrics, stage_seconds

log = logging.getLogger(__name__)


def read_table(path: str | Path, columns: Sequence[str], what: str) -> pd.DataFrame | None:
    """The CSV at ``path``, or None (logged) if there is none; refused if it lacks ``columns``."""
    if not Path(path).is_file():
        log.warning("no %s at %s: its chart is left out of the report", what, path)
        return None
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable {what} CSV ({err})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{path}: a {what} needs the columns {missing}")
    return table


def metrics_paths(patterns: Mapping[str, str], folds: Sequence[int]) -> dict[str, list[str]]:
    """``{stage: [its metrics files]}``: a fold stage's pattern filled with each fold's ``{fold}``."""
    return {s: [p.format(fold=f) for f in folds] if s in FOLD_STAGES else [p] for s, p in patterns.items()}


def run_section(folds: Sequence[int], history: str, ablation: str, metrics: Mapping[str, str]) -> tuple[str, dict]:
    """The HTML section and what it shows (charts drawn, files skipped). ``history`` and
    ``ablation`` are patterns with ``{fold}``; ``metrics`` maps each stage to its metrics file
    (a pattern for the fold stages), ``train`` among them."""
    stage_metrics = read_stage_metrics(metrics_paths(metrics, folds))
    parts, skipped, curves, bars = [], [], 0, 0
    for fold, train in zip(folds, stage_metrics["train"]):
        h = read_table(history.format(fold=fold), ["epoch", VAL_MAP], "training history")
        a = read_table(ablation.format(fold=fold), ["method", MAP], "re-ranking ablation")
        row = [curve_chart(h, train, fold)] if h is not None else []
        row += [ablation_chart(a, fold)] if a is not None else []
        skipped += [p.format(fold=fold) for p, t in ((history, h), (ablation, a)) if t is None]
        curves, bars = curves + (h is not None), bars + (a is not None)
        parts.append("<div class='charts'>" + "".join(row) + "</div>")
    note = (f"<p class='meta'>Left out (missing): {html.escape(', '.join(skipped))}.</p>" if skipped else "")
    section = "\n".join([
        "<h2>The run</h2>",
        "<p class='meta'>Per fold: validation mAP@1000 by epoch (<b style='color:#8c959f'>&#9632;</b> epoch 0, "
        "the pretrained start; <b style='color:#d4700a'>&#9670;</b> WiSE-FT mixes of epoch 0 and the last epoch, "
        "at x = alpha &#215; last epoch; the ring: the model kept), then validation mAP@1000 after each "
        "re-ranking step alone and the whole chain (final). Last, the wall time of each stage before this "
        "report (the run's summary, printed by make repro, adds the report's own).</p>",
        *parts, note, wall_chart(stage_seconds(stage_metrics), duration)])
    return section, {"curves": curves, "ablations": bars, "skipped": len(skipped)}
