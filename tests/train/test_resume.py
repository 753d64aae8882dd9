"""Resumable training: a run killed mid-epoch and started again ends exactly like one never killed.

On tiny generated data (3 epochs of 3 steps): a reference run to the end, then a run in a
subprocess that SIGKILLs itself in the middle of epoch 2 (:data:`KILLED_TRAIN`, which wraps the
run's step from outside), then the same command again, which resumes after
epoch 1. The history (loss, lr, validation metrics) and every tensor of model.pt must be
identical; only the timings may differ. A state saved under other params is ignored.
"""
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from retrieval.config import parse_params
from retrieval.train.resume import STATE_FILE, STATE_VERSION, load_resume_state, run_fingerprint

ROOT = Path(__file__).resolve().parents[2]

@pytest.fixture(scope="module")
def tiny(tiny_params):
    return tiny_params({
        "seed": 8,  # with these params the best epoch comes after the resume (see the test)
        "demo": {"seed": 3, "n_train_classes": 8, "n_test_classes": 2, "train_per_class": 6,
                 "queries_per_class": 1, "photos_per_ref_class": 1, "size": 48},
        "train": {"epochs": 3},
    })
COMPARED = ["epoch", "train_loss", "lr", "val_map@1000", "val_p@1"]  # not seconds, img/s
FOLD = 0


def run_stage(module: str, *args: str) -> None:
    mod = __import__(f"stages.{module}", fromlist=["main"])
    assert mod.main(list(args)) == 0, module


def write_params(tiny, workdir: Path, num_workers: int, **train) -> Path:
    params = {**tiny, "train": {**tiny["train"], "num_workers": num_workers, **train}}
    path = workdir / f"params_w{num_workers}{''.join(f'_{k}{v}' for k, v in train.items())}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def train_args(params: Path, out: str, resume: str) -> list[str]:
    return ["--params", str(params), "--fold", str(FOLD), "--folds", "split/folds.csv",
            "--model", f"{out}/model.pt", "--history", f"{out}/history.csv",
            "--metrics", f"{out}/metrics.json", "--resume-dir", resume]


# The train stage, SIGKILLed right after the N-th optimiser step of the process (argv[1]; the steps
# of every backbone counted): a crash mid-epoch. The test installs it by wrapping Run._step; the
# library has no hook for it.
KILLED_TRAIN = """
import os, signal, sys
from retrieval.train.run import Run
from stages.train import main
step, left = Run._step, [int(sys.argv[1])]

def step_then_die_at_the_last(self, *args):
    loss = step(self, *args)
    left[0] -= 1
    if left[0] == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return loss
Run._step = step_then_die_at_the_last
raise SystemExit(main(sys.argv[2:]))
"""


def train_subprocess(args: list[str], cwd: Path, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = ["-m", "stages.train"] if kill_at is None else ["-c", KILLED_TRAIN, str(kill_at)]
    return subprocess.run([sys.executable, *command, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workdir(tiny, module_tmp):
    """Demo data and folds.csv, made once for the module."""
    d = module_tmp
    cwd = os.getcwd()
    os.chdir(d)
    try:
        Path("params.yaml").write_text(yaml.safe_dump(tiny))
        run_stage("demo", "--out", "data")
        run_stage("split", "--out", "split/folds.csv", "--metrics", "split/metrics.json")
    finally:
        os.chdir(cwd)
    return d


def load_tensors(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


# the third case resumes P x K batches, a pair loss and progressive resizing (epoch 3 at 64 px)
TECHNIQUES = {"sampler": "pk", "m_per_class": 2, "pair_loss": "triplet", "final_image_size": 64, "final_epochs": 1}
# the fourth resumes after the head warm-up, with per-layer rates, L2-SP, the weight EMA and WiSE-FT mixes
FINETUNE = {"backbone_lr_scale": 0.1, "layer_decay": 0.8, "head_warmup_epochs": 1, "ema_decay": 0.9, "l2sp_decay": 50.0,
            "wise_alphas": [0.5]}


@pytest.mark.parametrize("num_workers,extra", [(0, {}), (1, {}), (1, TECHNIQUES), (0, FINETUNE)],
                         ids=["w0", "w1", "w1-techniques", "w0-finetune"])
def test_killed_run_resumes_to_identical_outputs(tiny, workdir, monkeypatch, num_workers, extra):
    monkeypatch.chdir(workdir)
    params = write_params(tiny, workdir, num_workers, **extra)
    tag = f"{num_workers}{'f' if 'ema_decay' in extra else 't' if extra else ''}"
    folds = pd.read_csv("split/folds.csv")
    steps_per_epoch = int((folds["fold"] != FOLD).sum()) // tiny["train"]["batch_size"]
    assert steps_per_epoch >= 2  # so that "the middle of epoch 2" exists

    # (a) uninterrupted reference run; it removes its resume state when done
    run_stage("train", *train_args(params, f"ref{tag}", f"ckpt/ref{tag}"))
    assert not Path(f"ckpt/ref{tag}").exists()
    ref_hist = pd.read_csv(f"ref{tag}/history.csv")
    ref_model = load_tensors(Path(f"ref{tag}/model.pt"))

    # (b) killed after the first step of epoch 2: the state of epoch 1 is there, no outputs yet
    args = train_args(params, f"run{tag}", f"ckpt/run{tag}")
    killed = train_subprocess(args, workdir, kill_at=steps_per_epoch + 1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state_path = Path(f"ckpt/run{tag}/{STATE_FILE}")
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and [r["epoch"] for r in state["history"]] == [0, 1]
    assert not Path(f"run{tag}/model.pt").exists()
    if not extra:
        shutil.copy(state_path, workdir / f"state_epoch1_w{num_workers}.pt")  # for the params test

    resumed = train_subprocess(args, workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "after epoch 1 of 3" in resumed.stderr
    assert not state_path.exists()  # deleted after a successful finish
    hist = pd.read_csv(f"run{tag}/history.csv")
    model = load_tensors(Path(f"run{tag}/model.pt"))

    print(f"\nnum_workers={num_workers} {extra}, {steps_per_epoch} steps/epoch, killed at step {steps_per_epoch + 1}")
    print(hist[COMPARED].to_string(index=False))
    print("best epoch", model["meta"]["epoch"], "val mAP@1000", model["meta"]["val_map@1000"])
    pd.testing.assert_frame_equal(hist[COMPARED], ref_hist[COMPARED], check_exact=True)
    assert hist["epoch"].tolist() == [0, 1, 2, 3]
    assert model["meta"] == ref_model["meta"]
    assert list(model["state_dict"]) == list(ref_model["state_dict"])
    for name, tensor in ref_model["state_dict"].items():
        assert torch.equal(model["state_dict"][name], tensor), name  # bit-identical
    # training did change the model: epoch rows differ from one another
    assert hist["train_loss"].iloc[1:].nunique() == 3
    if extra.get("final_epochs"):
        assert hist["image_size"].tolist() == [48, 48, 48, 64]  # progressive resizing, also after the resume
    # which epoch model.pt keeps is the tiny data's luck (it moved with the thread count and the
    # CPU); the epochs after the resume are checked through their losses and validation figures,
    # equal to the bit above, which only the weights trained after the resume produce


def test_state_of_other_params_is_ignored(tiny, workdir, monkeypatch, caplog):
    monkeypatch.chdir(workdir)
    saved = workdir / "state_epoch1_w0.pt"
    if not saved.exists():  # this test alone: make an epoch-1 state of the tiny params
        args = train_args(write_params(tiny, workdir, 0), "killed", "ckpt/killed")
        steps_per_epoch = int((pd.read_csv("split/folds.csv")["fold"] != FOLD).sum()) // tiny["train"]["batch_size"]
        assert train_subprocess(args, workdir, kill_at=steps_per_epoch + 1).returncode == -signal.SIGKILL
        shutil.copy(f"ckpt/killed/{STATE_FILE}", saved)
    # the same run but another learning rate (and 1 epoch, to be quick): the epoch-1 state
    # must not be resumed (resuming it would even skip all training: epochs == 1)
    params = write_params(tiny, workdir, 0, lr=0.002, epochs=1)
    Path("ckpt/other").mkdir(parents=True, exist_ok=True)
    shutil.copy(saved, f"ckpt/other/{STATE_FILE}")
    with caplog.at_level(logging.INFO, logger="retrieval.train"):
        run_stage("train", *train_args(params, "other", "ckpt/other"))
    text = caplog.text
    assert "resume state of other params, data or code; ignored, training from scratch" in text
    assert "resuming" not in text
    assert " epoch 1: loss" in text  # it trained
    assert pd.read_csv("other/history.csv")["epoch"].tolist() == [0, 1]
    assert not Path(f"ckpt/other/{STATE_FILE}").exists()


def test_fingerprint_covers_params_fold_and_data(tiny, workdir, tmp_path):
    folds = pd.read_csv(workdir / "split/folds.csv", dtype=str, keep_default_na=False)
    folds["fold"] = folds["fold"].astype(int)
    root = workdir / "data"
    p = parse_params({**tiny})

    def fp(params=p, fold=0, table=folds):
        return run_fingerprint(params, fold, root, table[table["fold"] != fold], table[table["fold"] == fold])

    base = fp()
    assert fp() == base  # stable
    assert fp(parse_params({**tiny, "seed": tiny["seed"] + 1})) != base
    assert fp(parse_params({**tiny, "train": {**tiny["train"], "lr": 0.002}})) != base
    assert fp(parse_params({**tiny, "train": {**tiny["train"], "num_workers": 1}})) != base
    assert fp(parse_params({**tiny, "model": {**tiny["model"], "margin": 0.2}})) != base
    assert fp(fold=1) != base
    assert fp(table=folds.iloc[1:]) != base  # one image fewer
    relabelled = folds.copy()
    relabelled.loc[0, "label"] = "other"
    assert fp(table=relabelled) != base
    # only params.data / rerank / ensemble sections changed: the same run
    assert fp(parse_params({**tiny, "rerank": {"k": 10}})) == base

    # a state with another fingerprint, or garbage, is not loaded
    torch.save({"version": STATE_VERSION, "fingerprint": "0" * 64, "epoch": 1}, tmp_path / "a.pt")
    assert load_resume_state(tmp_path / "a.pt", base) is None
    (tmp_path / "b.pt").write_bytes(b"not a torch file")
    assert load_resume_state(tmp_path / "b.pt", base) is None
    assert load_resume_state(tmp_path / "missing.pt", base) is None
    torch.save({"version": STATE_VERSION, "fingerprint": base, "epoch": 1}, tmp_path / "c.pt")
    assert load_resume_state(tmp_path / "c.pt", base)["epoch"] == 1


def test_two_backbones_killed_in_the_second_resume_it_and_keep_the_first(tiny, workdir, monkeypatch):
    """model.backbone a list: each backbone is its own seeded run (the second equals training it
    alone), a crash in the second resumes it and does not train the finished first one again,
    and the outputs are those of an uninterrupted run."""
    monkeypatch.chdir(workdir)
    pair = ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]
    two = workdir / "params_two.yaml"
    two.write_text(yaml.safe_dump({**tiny, "model": {**tiny["model"], "backbone": pair}}))
    alone = workdir / "params_lite1.yaml"
    alone.write_text(yaml.safe_dump({**tiny, "model": {**tiny["model"], "backbone": pair[1]}}))
    steps_per_epoch = int((pd.read_csv("split/folds.csv")["fold"] != FOLD).sum()) // tiny["train"]["batch_size"]

    run_stage("train", *train_args(two, "two_ref", "ckpt/two_ref"))
    run_stage("train", *train_args(alone, "lite1_ref", "ckpt/lite1_ref"))
    assert not Path("ckpt/two_ref").exists()
    ref = load_tensors(Path("two_ref/model.pt"))
    assert [m["meta"]["backbone"] for m in ref["members"]] == pair
    single = load_tensors(Path("lite1_ref/model.pt"))
    assert all(torch.equal(single["state_dict"][k], v) for k, v in ref["members"][1]["state_dict"].items())
    hist = pd.read_csv("two_ref/history.csv")
    assert hist["epoch"].tolist() == [0, 1, 2, 3]
    pd.testing.assert_series_equal(hist[f"val_map@1000/{pair[1]}"],
                                   pd.read_csv("lite1_ref/history.csv")["val_map@1000"], check_names=False)
    metrics = yaml.safe_load(Path("two_ref/metrics.json").read_text())
    assert set(metrics["members"]) == set(pair)
    assert metrics["val_map@1000"] == metrics["members"][pair[0]]["val_map@1000"]

    args = train_args(two, "two_run", "ckpt/two_run")
    killed = train_subprocess(args, workdir, kill_at=3 * steps_per_epoch + steps_per_epoch + 1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert Path(f"ckpt/two_run/{pair[0]}/{STATE_FILE}").exists()  # the finished first backbone
    assert torch.load(f"ckpt/two_run/{pair[1]}/{STATE_FILE}", weights_only=True)["epoch"] == 1
    resumed = train_subprocess(args, workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{pair[0]}: resuming from" in resumed.stderr and "after epoch 3 of 3" in resumed.stderr
    assert f"{pair[1]}: resuming from" in resumed.stderr and "after epoch 1 of 3" in resumed.stderr
    assert f"fold 0 {pair[1]} epoch 2: loss" in resumed.stderr  # the second goes on where it stopped
    assert " epoch 1: loss" not in resumed.stderr  # nothing trained again
    assert not Path("ckpt/two_run").exists()
    got = load_tensors(Path("two_run/model.pt"))
    for m_ref, m_got in zip(ref["members"], got["members"]):
        assert m_ref["meta"] == m_got["meta"]
        assert all(torch.equal(m_got["state_dict"][k], v) for k, v in m_ref["state_dict"].items())
    cols = [c for c in hist.columns if not c.startswith(("seconds", "train_img_per_s"))]
    pd.testing.assert_frame_equal(pd.read_csv("two_run/history.csv")[cols], hist[cols], check_exact=True)
