"""Which run and which weights a backbone keeps: the learning-rate backoff (a run whose first
backbone epoch validates below the pretrained model is trained again at a lower rate) and
WiSE-FT's mixes of the start and last weights (kept only when the validation queries say so)."""
from __future__ import annotations

import logging

import numpy as np

from retrieval.config import Params
from retrieval.metrics import MAP, P1
from retrieval.results.bootstrap import bootstrap_means
from retrieval.train.epochs import EpochCheck, MemberResult, Progress, member_result, train_epochs
from retrieval.train.job import Job
from retrieval.train.optim import interpolate
from retrieval.train.resume import state_fingerprint
from retrieval.train.run import Run
from retrieval.metrics import VAL_MAP
from retrieval.validation_metrics import QUERY_AP

log = logging.getLogger(__name__)


class BackedOff(Exception):
    """The run's first epoch that trains the backbone (``epoch``) validated at ``val``, below
    epoch 0's ``epoch0``: the run is abandoned for one at a lower rate (:func:`backed_off`)."""

    def __init__(self, epoch: int, val: float, epoch0: float):
        super().__init__(f"epoch {epoch} validated at mAP@1000 {val:.4f}, below epoch 0's {epoch0:.4f}")
        self.epoch, self.val, self.epoch0 = epoch, val, epoch0


def train_member(job: Job) -> MemberResult:
    """One backbone's run; writes only the resume state.

    With ``train.lr_backoff``, a run whose first backbone epoch validates below epoch 0 is
    abandoned (:class:`BackedOff`) and trained again from the start at ``lr x lr_backoff``
    (:func:`backed_off`); a killed run that had backed off resumes the lower rate's run."""
    lower = backed_off(job.params)
    if lower is not None and _has_state(job.with_params(lower)):
        return _selected(job.with_params(lower))
    try:
        return _selected(job, None if lower is None else _abandon_below_epoch0(job.params))
    except BackedOff as off:
        tp = lower.train
        log.warning("%s: epoch %d validated at mAP@1000 %.4f, below the pretrained model's %.4f: the learning "
                    "rate is too high for these images; training again from the start at lr %g%s (train.lr_backoff)",
                    job.name, off.epoch, off.val, off.epoch0, tp.lr, ", BatchNorm statistics fixed" if tp.freeze_bn else "")
        note = {"abandoned_epoch": off.epoch, f"abandoned_{VAL_MAP}": off.val, "lr": tp.lr, "freeze_bn": tp.freeze_bn}
        return _selected(job.with_params(lower, {"lr_backoff": note}))


def backed_off(params: Params) -> Params | None:
    """``params`` with ``train.lr`` x ``train.lr_backoff`` (and ``freeze_bn`` if
    ``train.backoff_freeze_bn``) and the backoff spent; None when off or when no epoch would
    train the backbone."""
    tp = params.train
    if not tp.lr_backoff or tp.epochs <= tp.head_warmup_epochs:
        return None
    lower = {"lr": tp.lr * tp.lr_backoff, "lr_backoff": 0.0, "freeze_bn": tp.freeze_bn or tp.backoff_freeze_bn}
    return params.model_copy(update={"train": tp.model_copy(update=lower)})


def _abandon_below_epoch0(params: Params) -> EpochCheck:
    """The backoff's check: the first epoch that trains the backbone raises :class:`BackedOff`
    when it validates below epoch 0."""
    first = params.train.head_warmup_epochs + 1

    def check(epoch: int, m: dict, epoch0: float) -> None:
        if epoch == first and m[MAP] < epoch0:
            raise BackedOff(epoch, float(m[MAP]), float(epoch0))
    return check


def _has_state(job: Job) -> bool:
    """Whether ``job.resume_dir`` holds a state of its run (checked quietly)."""
    path = job.state_path
    return path is not None and path.is_file() and state_fingerprint(path) == job.fingerprint()


def _selected(job: Job, check: EpochCheck | None = None) -> MemberResult:
    """The run of ``job`` to its end, then its WiSE-FT mixes; what it keeps."""
    run, progress = train_epochs(job, check)
    tp = job.params.train
    wise = wise_mixes(run, progress) if tp.wise_alphas and tp.epochs else {"map": {}, "share_above_best_epoch": {}}
    return member_result(run, progress, wise)


def wise_mixes(run: Run, progress: Progress) -> dict:
    """WiSE-FT: validate each mix of the start and the last epoch's weights; the best mix that
    :func:`mix_wins` over the best epoch replaces it (its record carries ``alpha``). Returns
    every mix's mAP@1000 and its share of resamples above the best epoch."""
    last = run.trained_weights()  # also after a resume at the end
    best_epoch, scores, shares, tp = progress.best, {}, {}, run.tp
    for alpha in tp.wise_alphas:
        mixed = interpolate(progress.start_state, last, alpha)
        m = run.validate(mixed)
        scores[str(alpha)] = m[MAP]
        shares[str(alpha)] = share_above(m, best_epoch) if QUERY_AP in m and QUERY_AP in best_epoch else None
        log.info("WiSE-FT alpha %.2f: val mAP@1000 %.4f, P@1 %.4f; above the best epoch's %.4f in %s of "
                 "paired resamples", alpha, m[MAP], m[P1], best_epoch[MAP], shares[str(alpha)])
        if mix_wins(m, best_epoch, tp.wise_confidence):
            progress.keep_if_best(tp.epochs, m, lambda: mixed, alpha=alpha)
    return {"map": scores, "share_above_best_epoch": shares}


def share_above(mix: dict, best: dict) -> float:
    """Share of paired bootstrap resamples of the validation queries in which ``mix``'s mAP@1000
    is above ``best``'s (both validation records carrying :data:`QUERY_AP`)."""
    diff = np.asarray(mix[QUERY_AP], dtype=np.float64) - np.asarray(best[QUERY_AP], dtype=np.float64)
    return float((bootstrap_means(diff) > 0).mean())


def mix_wins(mix: dict, best: dict, confidence: float) -> bool:
    """WiSE-FT's rule: a mix replaces the best epoch only if its validation mAP@1000 is higher
    and, with ``confidence`` > 0, higher in at least that share of paired bootstrap resamples
    (:func:`share_above`): a gain within the noise of the fold's queries is not taken."""
    return mix[MAP] > best[MAP] and (confidence == 0 or share_above(mix, best) >= confidence)
