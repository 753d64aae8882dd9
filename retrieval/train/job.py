"""One backbone's training job on one fold: what every layer of its run shares (the fold driver,
the selection policy, the epoch loop and the run itself), held in one object."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from retrieval.config import Params
from retrieval.data.folds import fold_parts
from retrieval.train.distributed import Dist
from retrieval.train.interrupts import Interrupts
from retrieval.train.resume import STATE_FILE, run_fingerprint


@dataclass(frozen=True, eq=False)
class Job:
    """``params`` of one backbone (``model.backbone`` a single name) trained on ``fold`` of
    ``folds`` (images under ``root``); its resume state kept in ``resume_dir`` (None: none kept);
    ``notes``: entries for the metrics that a resume must keep (``lr_backoff``)."""
    params: Params
    folds: pd.DataFrame
    root: str
    fold: int
    resume_dir: Path | None = None
    interrupts: Interrupts = field(default_factory=Interrupts)
    d: Dist = field(default_factory=Dist)
    notes: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``fold <k> <backbone>``, as log lines name the run."""
        return f"fold {self.fold} {self.params.model.backbone}"

    @property
    def state_path(self) -> Path | None:
        return None if self.resume_dir is None else Path(self.resume_dir) / STATE_FILE

    def fingerprint(self) -> str:
        """The run's :func:`~retrieval.train.resume.run_fingerprint`: which saved state is its own."""
        train_df, valid_df = fold_parts(self.folds, self.fold)
        return run_fingerprint(self.params, self.fold, self.root, train_df, valid_df)

    def with_params(self, params: Params, notes: dict | None = None) -> Job:
        """This job with other ``params`` (and ``notes``): the run again at a lower rate."""
        return dataclasses.replace(self, params=params, notes=self.notes if notes is None else notes)
