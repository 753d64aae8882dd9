"""Extraction under torchrun: each process embeds a contiguous slice of every set, all get the
rows back in order, rank 0 writes; the files equal one process's to float precision."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from retrieval.embed.feature_file import load_features
from retrieval.embed.whitening import load_whitening
from retrieval.train.distributed import Dist, gather_rows, rank_slice

ROOT = Path(__file__).resolve().parents[2]


def test_rank_slices_cover_every_row_once_in_order():
    # 7 rows over 3 processes: the first 7 % 3 = 1 rank takes one more (worked by hand: 3, 2, 2)
    assert [rank_slice(7, Dist(r, 3, r, True)) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert [rank_slice(2, Dist(r, 4, r, True)) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert rank_slice(5, Dist()) == (0, 5)
    block = np.arange(6.0).reshape(3, 2)
    assert gather_rows([block], Dist())[0] is block  # one process: nothing to gather


def _run(cmd, cwd, check=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert not check or r.returncode == 0, r.stderr[-3000:]
    return r


def _extract(out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stages.extract", "--fold", "0", "--model", "model/model.pt", "--folds", "folds.csv",
            *[f"--{n}={out}/{n}.npz" for n in ("query", "reference", "valid", "whitening")],
            f"--metrics={out}/metrics.json", *extra]


@pytest.fixture(scope="module")
def trained(module_tmp, tiny_params):
    """A tiny fold-0 model (no training steps: epoch 0 is the untrained model) and its data; odd set
    sizes (7 queries, 5 references) so that the slices differ in size; two TTA scales, whitening."""
    params = tiny_params({"demo": {"n_test_classes": 7, "queries_per_class": 1, "photos_per_ref_class": 0},
                          "train": {"epochs": 0, "threads": 1},
                          "extract": {"scales": [1.0, 1.25], "whiten_dim": 8}})
    (module_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    _run([sys.executable, "-m", "stages.demo", "--out", "data"], module_tmp)
    _run([sys.executable, "-m", "stages.split", "--out", "folds.csv", "--metrics", "split.json"], module_tmp)
    _run([sys.executable, "-m", "stages.train", "--fold", "0", "--folds", "folds.csv", "--model", "model/model.pt",
          "--history", "model/history.csv", "--metrics", "model/metrics.json"], module_tmp)
    return module_tmp


def test_two_gloo_processes_write_one_process_files(trained):
    _run(_extract("one"), trained)
    two = _run(_extract("two", "--nproc", "2"), trained)
    assert two.stdout.count("extract fold 0:") == 1  # rank 0 alone reports (and writes)
    for name in ("query", "reference", "valid"):
        a, b = load_features(trained / f"one/{name}.npz"), load_features(trained / f"two/{name}.npz")
        assert len(a.ids) >= 5 and a.ids.tolist() == b.ids.tolist()
        np.testing.assert_array_equal(a.labels, b.labels)
        # the same images through the same model, one process or two: equal to float precision
        np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)
        assert np.abs(a.embeddings).sum(axis=1).min() > 0  # every row filled
    for wa, wb in zip(load_whitening(trained / "one/whitening.npz"), load_whitening(trained / "two/whitening.npz")):
        np.testing.assert_allclose(wa[0], wb[0], atol=1e-5)


def test_several_processes_refuse_resumable_shards(trained):
    params = yaml.safe_load((trained / "params.yaml").read_text())
    params["extract"]["shard_size"] = 4
    (trained / "shards.yaml").write_text(yaml.safe_dump(params))
    r = _run(_extract("bad", "--nproc", "2", "--params", "shards.yaml", "--resume-dir", "work"), trained, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "extract.shard_size 4 with 2 processes" in r.stderr
    assert not (trained / "bad").exists()
