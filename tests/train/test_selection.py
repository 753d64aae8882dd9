"""What a backbone keeps: WiSE-FT's mixes (taken only when the validation queries say so) and
the learning-rate backoff (a run whose first backbone epoch is below epoch 0 trained again)."""
import logging

import pandas as pd
import pytest
import torch
from train_helpers import record

from retrieval.config import parse_params
from retrieval.train.fold import train_fold
from retrieval.train.selection import backed_off, mix_wins, share_above


def test_wise_keeps_the_best_mix_of_start_and_last(tiny, folds, tmp_path, validations):
    """Epochs score 0.5, 0.4, 0.45; the mixes 0.25 / 0.75 score 0.6 / 0.55: the 0.25 mix of the
    epoch-0 and epoch-2 weights is kept, and the metrics say so."""
    seen = validations([0.5, 0.4, 0.45, 0.6, 0.55])
    p = parse_params({**tiny, "train": {**tiny["train"], "wise_alphas": [0.25, 0.75], "wise_confidence": 0.0}})
    metrics = train_fold(p, folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    assert metrics["wise_alpha"] == 0.25 and metrics["best_epoch"] == 2 and metrics["val_map@1000"] == 0.6
    assert metrics["wise_val_map@1000"] == {"0.25": 0.6, "0.75": 0.55}
    start, last = seen[0], seen[2]
    ckpt = torch.load(tmp_path / "m.pt", weights_only=False)
    assert ckpt["meta"]["wise_alpha"] == 0.25
    w = "neck.0.weight"
    assert torch.allclose(ckpt["state_dict"][w], 0.75 * start[w] + 0.25 * last[w], atol=1e-6)


def test_share_above_golden():
    """Paired resamples of 20 queries: a gain on every query is above in all of them, no gain in
    none; a gain on 2 of the 20 is above whenever one of them is drawn: 1 - 0.9^20 = 0.878."""
    base = record([0.5] * 20)
    assert share_above(record([0.52] * 20), base) == 1.0
    assert share_above(base, base) == 0.0
    assert abs(share_above(record([1.0, 1.0] + [0.5] * 18), base) - (1 - 0.9 ** 20)) < 0.03


@pytest.mark.parametrize("confidence, kept", [(0.0, True), (0.95, False)])
def test_mix_wins_needs_the_confidence(confidence, kept):
    base = record([0.5] * 20)
    lucky = record([1.0, 1.0] + [0.5] * 18)  # mean 0.55, above in 88% of resamples
    assert mix_wins(lucky, base, confidence) is kept
    assert mix_wins(record([0.52] * 20), base, 0.95)  # small but on every query
    assert not mix_wins(record([0.4] * 20), base, 0.0)  # lower: never


@pytest.mark.parametrize("confidence, alpha, best", [(0.0, 0.25, 0.55), (0.95, 0.75, 0.52)])
def test_wise_takes_a_mix_only_when_the_queries_say_so(tiny, folds, tmp_path, validations, confidence, alpha, best):
    """Epoch 0 (every query 0.5) beats epochs 1 and 2; the 0.25 mix gains on 2 queries of 20
    (mean 0.55), the 0.75 mix a little on each (0.52). Without a confidence the higher mean wins;
    at 0.95 only the mix that is above in 95% of paired resamples may replace the epoch."""
    validations([record([0.5] * 20), record([0.4] * 20), record([0.45] * 20),
                 record([1.0, 1.0] + [0.5] * 18), record([0.52] * 20)])
    p = parse_params({**tiny, "train": {**tiny["train"], "wise_alphas": [0.25, 0.75], "wise_confidence": confidence}})
    metrics = train_fold(p, folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    assert metrics["wise_alpha"] == alpha and metrics["val_map@1000"] == pytest.approx(best)
    shares = metrics["wise_share_above_best_epoch"]
    assert shares["0.75"] == 1.0 and 0.8 < shares["0.25"] < 0.95


def test_backed_off_params_golden(tiny):
    p = parse_params({**tiny, "train": {**tiny["train"], "lr": 0.01, "lr_backoff": 0.1, "backoff_freeze_bn": True}})
    lower = backed_off(p).train
    assert lower.lr == pytest.approx(0.001) and lower.lr_backoff == 0.0 and lower.freeze_bn is True
    assert backed_off(p.model_copy(update={"train": lower})) is None  # spent: one backoff at most
    assert backed_off(parse_params(tiny)) is None  # off (the tiny params' lr_backoff is 0)
    no_epoch = {**tiny["train"], "lr_backoff": 0.1, "epochs": 0}
    assert backed_off(parse_params({**tiny, "train": no_epoch})) is None  # no epoch to judge


def _run(p, folds, root, validations, scores, name, resume_dir=None):
    validations(scores)
    metrics = train_fold(p, folds, str(root), 0, root / f"{name}.pt", root / f"{name}.csv", resume_dir)
    return metrics, torch.load(root / f"{name}.pt", weights_only=False)["state_dict"], pd.read_csv(root / f"{name}.csv")


@pytest.mark.parametrize("restart_freeze_bn", [False, True])
def test_lr_backoff_trains_again_from_the_start_at_the_lower_rate(tiny, folds, tmp_path, validations, caplog,
                                                                  restart_freeze_bn):
    """Epoch 1 validates below epoch 0 (0.5 < 0.9): the run starts again at lr x 0.1, and what it
    keeps is exactly what a run at that rate from the start keeps; with train.backoff_freeze_bn
    that run has frozen BatchNorm statistics (the first attempt trained them), and it differs
    from the run with the other setting."""
    base = {**tiny, "train": {**tiny["train"], "wise_alphas": []}}
    p = parse_params({**base, "train": {**base["train"], "lr_backoff": 0.1, "backoff_freeze_bn": restart_freeze_bn}})
    with caplog.at_level(logging.WARNING, logger="retrieval.train"):
        metrics, saved, hist = _run(p, folds, tmp_path, validations, [0.9, 0.5, 0.9, 0.95, 0.97], "b")
    lower = p.train.lr * 0.1
    assert metrics["lr_backoff"] == {"abandoned_epoch": 1, "abandoned_val_map@1000": 0.5, "lr": pytest.approx(lower),
                                     "freeze_bn": restart_freeze_bn}
    assert metrics["best_epoch"] == 2 and "training again from the start" in caplog.text
    assert hist["epoch"].tolist() == [0, 1, 2] and hist["val_map@1000"].tolist() == [0.9, 0.95, 0.97]
    for freeze_bn in (True, False):
        direct = parse_params({**base, "train": {**base["train"], "lr": lower, "lr_backoff": 0.0,
                                                 "freeze_bn": freeze_bn}})
        m2, saved2, _ = _run(direct, folds, tmp_path, validations, [0.9, 0.95, 0.97], f"d{freeze_bn}")
        assert "lr_backoff" not in m2
        assert all(torch.equal(saved[k], saved2[k]) for k in saved2) == (freeze_bn == restart_freeze_bn)


def test_lr_backoff_leaves_a_run_that_helps_as_it_is(tiny, folds, tmp_path, validations):
    """Epoch 1 above epoch 0: no backoff, and the same weights as with the backoff off."""
    base = {**tiny, "train": {**tiny["train"], "wise_alphas": []}}
    on = parse_params({**base, "train": {**base["train"], "lr_backoff": 0.1}})
    m1, saved1, _ = _run(on, folds, tmp_path, validations, [0.5, 0.6, 0.55], "on")
    off = parse_params({**base, "train": {**base["train"], "lr_backoff": 0.0}})
    m2, saved2, _ = _run(off, folds, tmp_path, validations, [0.5, 0.6, 0.55], "off")
    assert "lr_backoff" not in m1 and m1["best_epoch"] == 1
    assert all(torch.equal(saved1[k], saved2[k]) for k in saved2)


def test_a_killed_run_that_had_backed_off_resumes_the_lower_rate(tiny, folds, tmp_path, validations):
    """Killed in the lower rate's epoch 2: started again, it resumes that run after its epoch 1
    (one validation left, not a new start at the first rate) and ends as the uninterrupted run."""
    p = parse_params({**tiny, "train": {**tiny["train"], "wise_alphas": [], "lr_backoff": 0.1}})
    ref, ref_saved, ref_hist = _run(p, folds, tmp_path, validations, [0.9, 0.5, 0.9, 0.95, 0.97], "ref")
    with pytest.raises(RuntimeError, match="killed"):
        _run(p, folds, tmp_path, validations, [0.9, 0.5, 0.9, 0.95], "run", tmp_path / "state")
    got, saved, hist = _run(p, folds, tmp_path, validations, [0.97], "run", tmp_path / "state")
    assert got["lr_backoff"] == ref["lr_backoff"] and got["best_epoch"] == 2
    assert hist["train_loss"].tolist()[1:] == ref_hist["train_loss"].tolist()[1:]
    assert all(torch.equal(saved[k], ref_saved[k]) for k in ref_saved)
