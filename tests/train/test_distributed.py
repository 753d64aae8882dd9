"""Training under torchrun: 2 CPU processes (gloo) end with the weights of 1 process that trains
on the same global batches, and only rank 0 writes and logs."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from retrieval.train.distributed import RankSlices, check_batch

ROOT = Path(__file__).resolve().parents[2]

@pytest.fixture
def tiny(tiny_params):
    return tiny_params({
        "seed": 5,
        "demo": {"seed": 4, "n_train_classes": 8, "n_test_classes": 2, "train_per_class": 6,
                 "queries_per_class": 1, "photos_per_ref_class": 1, "size": 48},
        # batch-independent layers (freeze_bn) and fp32, so that the split batch gives the same update
        "train": {"epochs": 2, "freeze_bn": True, "amp": "off", "threads": 1},
    })


def test_rank_slices_cut_every_global_batch():
    batches = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert list(RankSlices(batches, 0, 2)) == [[0, 1], [4, 5], [8, 9]]
    assert list(RankSlices(batches, 1, 2)) == [[2, 3], [6, 7], [10, 11]]
    assert len(RankSlices(batches, 1, 2)) == 3
    with pytest.raises(ValueError, match="cannot be split over 3 processes"):
        list(RankSlices(batches, 0, 3))
    check_batch(8, 2, 4)
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        check_batch(8, 3, None)
    with pytest.raises(ValueError, match="not a multiple of train.m_per_class 4"):
        check_batch(8, 4, 4)


def _run(cmd, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("sampler", ["random", "pk"])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny, tmp_path, sampler):
    params = {**tiny, "train": {**tiny["train"], "sampler": sampler, "m_per_class": 2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _run([sys.executable, "-m", "stages.demo", "--out", "data"], tmp_path)
    _run([sys.executable, "-m", "stages.split", "--out", "folds.csv", "--metrics", "split.json"], tmp_path)

    def args(out):
        return ["--fold", "0", "--folds", "folds.csv", "--model", f"{out}/model.pt",
                "--history", f"{out}/history.csv", "--metrics", f"{out}/metrics.json"]

    # one process, launched by torchrun (so it takes the same per-image augmentation seeds)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
          "-m", "stages.train", *args("one")], tmp_path)
    # two processes: the stage relaunches itself under torchrun, each process gets half a batch
    two = _run([sys.executable, "-m", "stages.train", "--nproc", "2", *args("two")], tmp_path)
    assert two.stderr.count(" epoch 1: loss") == 1  # rank 0 alone logs

    # the same batches, augmentations and losses: the histories agree to float precision
    h1, h2 = pd.read_csv(tmp_path / "one/history.csv"), pd.read_csv(tmp_path / "two/history.csv")
    assert h1["epoch"].tolist() == h2["epoch"].tolist() == [0, 1, 2]
    assert h1["train_loss"].iloc[1] != h1["train_loss"].iloc[2]  # it did train
    pd.testing.assert_series_equal(h1["train_loss"], h2["train_loss"], rtol=1e-5)
    # validation: the same at epoch 0 and close after; on the tiny validation set one swapped pair
    # of near-tied neighbours moves mAP@1000 by about 0.01, and the weights differ in float order
    # (below), so after two epochs of P x K batches a swap was seen (0.4086 against 0.4225)
    assert h1["val_map@1000"].iloc[0] == h2["val_map@1000"].iloc[0]
    pd.testing.assert_series_equal(h1["val_map@1000"], h2["val_map@1000"], atol=0.03)
    # the weights: Adam's first steps move every weight by about +-lr whatever the size of its
    # gradient, so a sign flip of a near-zero gradient (float summation order) moves one weight by
    # 2 lr; compared over the whole update, the two runs differ by under 2% of it (measured: 0.3%)
    from retrieval.config import parse_params
    from retrieval.model.network import build_model
    from retrieval.train.run import seed_everything
    p = parse_params(params)
    seed_everything(p.seed + 0)
    w0 = build_model(p.model)[0].state_dict()  # the initial weights of both runs
    one = torch.load(tmp_path / "one/model.pt", weights_only=False)
    two = torch.load(tmp_path / "two/model.pt", weights_only=False)
    e1, e2 = one["meta"]["epoch"], two["meta"]["epoch"]
    # both keep the last epoch (measured: random 0.4663 / 0.4711, P x K 0.4119 / 0.4119 over epoch 1's
    # 0.4176 and 0.4021); a flip would leave no weights to compare, so it fails: change the seeds then
    assert e1 == e2 >= 1, f"kept epochs differ ({e1}, {e2}): the weights cannot be compared; pick other seeds"
    diff = update = 0.0
    for name, ref in one["state_dict"].items():
        if ref.dtype.is_floating_point and "running_" not in name:
            diff += float(((two["state_dict"][name] - ref).double() ** 2).sum())
            update += float(((ref - w0[name]).double() ** 2).sum())
    assert update > 1.0  # training moved the weights
    assert (diff / update) ** 0.5 < 0.02, (diff / update) ** 0.5


def test_sync_batchnorm_conversion_keeps_activations_and_checkpoint_keys():
    """On CUDA with several processes BatchNorm becomes SyncBatchNorm (timm's conversion, which
    keeps the activation fused into timm's BatchNormAct); the state dict must still load into
    the plain model that extract rebuilds, and eval outputs must not change."""
    from timm.layers import convert_sync_batchnorm

    from retrieval.config import ModelParams
    from retrieval.model.network import build_model

    torch.manual_seed(0)
    plain, _ = build_model(ModelParams(embedding_dim=8), pretrained="none")
    plain.eval()
    synced = convert_sync_batchnorm(build_model(ModelParams(embedding_dim=8), pretrained="none")[0])
    synced.load_state_dict(plain.state_dict())
    synced.eval()
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    assert list(synced.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(synced(x), plain(x))  # same activations: none lost
