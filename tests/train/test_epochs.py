"""The epoch loop: the head warm-up, BatchNorm statistics fixed or trained, the weights validated
and kept (the EMA's with one), the best record, the check that may abandon a run, and the
warning when training did not help."""
import logging

import pandas as pd
import pytest
import torch
from train_helpers import RISING

from retrieval.config import parse_params
from retrieval.train.epochs import Progress, train_epochs
from retrieval.train.fold import train_fold
from retrieval.train.job import Job


def _validated_states(p, folds, tmp_path, validations) -> list[dict]:
    """Train fold 0 with ``p``; the state dict each validation saw, in order (each scored above
    the one before, so the last is the one kept)."""
    seen = validations(RISING)
    train_fold(p, folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    return seen


def test_head_warmup_leaves_the_backbone_untouched_and_ema_validates(tiny, folds, tmp_path, validations):
    """One epoch of two with the backbone frozen: after it, backbone weights and BatchNorm
    statistics are the pretrained ones, the neck moved; with an EMA the validated and kept
    weights are the average's."""
    p = parse_params({**tiny, "train": {**tiny["train"], "head_warmup_epochs": 1, "ema_decay": 0.5}})
    start, after_head, end = _validated_states(p, folds, tmp_path, validations)
    backbone = [k for k in start if k.startswith("backbone.")]
    assert all(torch.equal(after_head[k], start[k]) for k in backbone)  # weights and BN statistics
    assert not torch.equal(after_head["neck.0.weight"], start["neck.0.weight"])
    assert any(not torch.equal(end[k], start[k]) for k in backbone)  # epoch 2 trained it
    saved = torch.load(tmp_path / "m.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(saved[k], end[k]) for k in end)  # the EMA weights validated are the ones kept
    hist = pd.read_csv(tmp_path / "h.csv")
    # the rate of the next step: 12 training images, batch 8, so 1 step an epoch and no warm-up
    # step (round(0.5)); after the head epoch the backbone starts at lr x lr_factor(0, 1, 0) = lr
    assert hist["backbone_lr"].tolist()[:2] == pytest.approx([0.0, 1e-3])


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_every_batchnorm_statistic_while_the_weights_train(tiny, folds, tmp_path, validations,
                                                                          freeze_bn):
    """train.freeze_bn: after two epochs every BatchNorm's running statistics, the
    neck's too, are the start's, while weights moved; off, the statistics move with the batches."""
    p = parse_params({**tiny, "train": {**tiny["train"], "epochs": 2, "freeze_bn": freeze_bn}})
    seen = _validated_states(p, folds, tmp_path, validations)
    start, end = seen[0], seen[-1]
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert len(stats) > 10 and any(k.startswith("neck.") for k in stats)
    assert all(torch.equal(end[k], start[k]) for k in stats) == freeze_bn
    assert not torch.equal(end["neck.0.weight"], start["neck.0.weight"])


def test_warns_when_no_epoch_beats_the_pretrained_model(tiny, folds, tmp_path, validations, caplog):
    validations([0.9, 0.5, 0.6])  # epoch 0, 1, 2: training only made it worse
    with caplog.at_level(logging.WARNING, logger="retrieval.train"):
        metrics = train_fold(parse_params(tiny), folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    assert metrics["best_epoch"] == 0 and metrics["training_helped"] is False
    assert "training did not help" in caplog.text and "0.9000" in caplog.text


def test_keep_if_best_takes_only_a_higher_map():
    progress = Progress(0, [], {"epoch": 0, "map@1000": 0.5}, {"w": 0}, {"w": 0}, {})
    progress.keep_if_best(1, {"map@1000": 0.5}, lambda: {"w": 1})  # a tie keeps the earlier
    assert progress.best["epoch"] == 0 and progress.best_state == {"w": 0}
    progress.keep_if_best(2, {"map@1000": 0.6}, lambda: {"w": 2}, alpha=0.5)
    progress.keep_if_best(3, {"map@1000": 0.55}, lambda: {"w": 3})
    assert progress.best == {"epoch": 2, "map@1000": 0.6, "alpha": 0.5} and progress.best_state == {"w": 2}


def test_a_check_that_raises_abandons_the_epoch_before_its_state_is_saved(tiny, folds, tmp_path, validations):
    """The check sees each epoch's validation and epoch 0's mAP@1000; raising at epoch 2 leaves
    the state of epoch 1, and the run's progress is not the epoch's."""
    validations([0.3, 0.4, 0.5])
    seen = []

    class Abandoned(Exception):
        pass

    def check(epoch, m, epoch0):
        seen.append((epoch, m["map@1000"], epoch0))
        if epoch == 2:
            raise Abandoned
    job = Job(parse_params(tiny), folds, str(tmp_path), 0, tmp_path / "state")
    with pytest.raises(Abandoned):
        train_epochs(job, check)
    assert seen == [(1, 0.4, 0.3), (2, 0.5, 0.3)]
    assert torch.load(job.state_path, weights_only=True)["epoch"] == 1
