"""A backbone's run: its seeds, the step (L2-SP's pull inside it, a non-finite loss refused with
the step that made it), and a Ctrl-C taken after the step it came in."""
import numpy as np
import pytest
import torch
from train_helpers import RISING

from retrieval.config import parse_params
from retrieval.train.fold import train_fold
from retrieval.train.job import Job
from retrieval.train.run import Run, epoch_seed, seed_everything


def test_epoch_seed_depends_on_the_seed_and_epoch_alone():
    seeds = {(s, e): epoch_seed(s, e) for s in (0, 1, 2**32) for e in (1, 2)}
    assert len(set(seeds.values())) == 4  # 2**32 wraps to 0: the seed is taken mod 2**32
    assert seeds[(0, 1)] == seeds[(2**32, 1)] and epoch_seed(1, 2) == seeds[(1, 2)]
    assert seeds[(0, 1)] == int(np.random.SeedSequence([0, 1]).generate_state(1)[0])


def test_seed_everything_repeats_every_generator():
    draws = []
    for _ in range(2):
        seed_everything(5)
        draws.append((np.random.rand(), torch.rand(1).item(), __import__("random").random()))
    assert draws[0] == draws[1]


def test_l2sp_all_the_way_keeps_the_backbone_at_its_start(tiny, folds, tmp_path, validations):
    """lr x l2sp_decay = 1 (one step, at the full rate): the step's backbone change is undone, the neck trained;
    BatchNorm statistics are buffers, not pulled."""
    p = parse_params({**tiny, "train": {**tiny["train"], "epochs": 1, "warmup_epochs": 0, "l2sp_decay": 1000.0}})
    seen = validations(RISING)
    train_fold(p, folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    start, end = seen[0], seen[-1]
    run = Run(Job(p, folds, str(tmp_path), 0))
    trainable = {k for k, prm in run.model.named_parameters() if prm.requires_grad}
    weights = [k for k in start if k.startswith("backbone.") and k in trainable]
    assert weights and all(torch.equal(end[k], start[k]) for k in weights)
    assert not torch.equal(end["neck.0.weight"], start["neck.0.weight"])


@pytest.fixture
def run4(tiny, folds, tmp_path):
    """A run of 3 steps an epoch (12 training images, batches of 4)."""
    p = parse_params({**tiny, "train": {**tiny["train"], "batch_size": 4}})
    run = Run(Job(p, folds, str(tmp_path), 0))
    assert run.steps_per_epoch == 3
    return run


def test_a_non_finite_loss_names_the_epoch_and_the_runs_step(run4, monkeypatch):
    losses = iter([1.0, 2.0, float("nan")])
    loss_of = run4.step_loss
    monkeypatch.setattr(run4, "step_loss", lambda x, y: loss_of(x, y) * 0 + next(losses))
    with pytest.raises(FloatingPointError, match=r"fold 0 epoch 2 step 5: loss is nan"):
        run4.train_epoch(2)  # epoch 2's third step: steps 0-2 were epoch 1's


def test_a_pending_ctrl_c_stops_the_epoch_after_the_step_it_came_in(run4, monkeypatch):
    steps = []
    step = run4._step
    monkeypatch.setattr(run4, "_step", lambda *a: steps.append(a[-1]) or step(*a))
    run4.job.interrupts.pending = True  # as the SIGINT handler leaves it
    with pytest.raises(KeyboardInterrupt):
        run4.train_epoch(1)
    assert steps == [0]
