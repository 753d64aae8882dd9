"""Repeated runs: the tiny pipeline run twice with the same params gives identical artefacts.

Every stage's ``main`` is chained as in test_pipeline.py (demo -> split -> train -> extract ->
rerank -> ensemble) into two scratch folders: once in this process, once in a fresh Python
process with another hash seed (so set or dict-of-str ordering cannot hide). Compared by sha256: folds.csv, the arrays of
every feature file (ids, embeddings, labels, roles, meta: the loaded arrays, since an .npz's
zip headers hold timestamps), the ranking arrays, submission.csv, and also the tensors of
each model.pt and the history (timings excluded), the per-query AP files and the ensemble's
metrics (bootstrap interval included). ``pytest -s`` prints the hashes.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml



@pytest.fixture
def tiny(tiny_params):
    return tiny_params({"seed": 7, "train": {"epochs": 2, "batch_size": 4}})
FOLDS = (0, 1)
ROOT = Path(__file__).resolve().parents[1]


def run_stage(module: str, *args: str) -> None:
    mod = __import__(f"stages.{module}", fromlist=["main"])
    assert mod.main(list(args)) == 0, module


def run_pipeline(workdir: Path, params: dict) -> None:
    workdir.mkdir()
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        _run_pipeline(params)
    finally:
        os.chdir(cwd)


def _run_pipeline(params: dict) -> None:
    Path("params.yaml").write_text(yaml.safe_dump(params))
    run_stage("demo", "--out", "data")
    run_stage("split", "--out", "split/folds.csv", "--metrics", "split/metrics.json")
    for f in FOLDS:
        run_stage("train", "--fold", str(f), "--folds", "split/folds.csv", "--model", f"train/fold{f}/model.pt",
                  "--history", f"train/fold{f}/history.csv", "--metrics", f"train/fold{f}/metrics.json",
                  "--resume-dir", f"checkpoints/train/fold{f}")
        run_stage("extract", "--fold", str(f), "--model", f"train/fold{f}/model.pt", "--folds", "split/folds.csv",
                  "--query", f"extract/fold{f}/query.npz", "--reference", f"extract/fold{f}/reference.npz",
                  "--valid", f"extract/fold{f}/valid.npz", "--whitening", f"extract/fold{f}/whitening.npz",
                  "--metrics", f"extract/fold{f}/metrics.json")
        run_stage("rerank", "--query", f"extract/fold{f}/query.npz", "--reference", f"extract/fold{f}/reference.npz",
                  "--valid", f"extract/fold{f}/valid.npz", "--ranking", f"rerank/fold{f}/ranking.npz",
                  "--metrics", f"rerank/fold{f}/metrics.json", "--ablation", f"rerank/fold{f}/ablation.csv",
                  "--valid-ap", f"rerank/fold{f}/valid_ap.csv", "--valid-ranking", f"rerank/fold{f}/valid_ranking.npz")
    run_stage("ensemble", "--rankings", "rerank/fold{fold}/ranking.npz", "--rerank-metrics",
              "rerank/fold{fold}/metrics.json", "--valid-ap", "rerank/fold{fold}/valid_ap.csv",
              "--submission", "submission/submission.csv", "--metrics", "ensemble/metrics.json",
              "--pooled-ap", "ensemble/valid_ap.csv")


def sha_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha_array(a: np.ndarray) -> str:
    """Hash of an array's dtype, shape and contents."""
    a = np.ascontiguousarray(a)
    return sha_bytes(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())


def artefact_hashes(workdir: Path) -> dict[str, str]:
    out = {"split/folds.csv": sha_bytes((workdir / "split/folds.csv").read_bytes())}
    for f in FOLDS:
        state = torch.load(workdir / f"train/fold{f}/model.pt", map_location="cpu", weights_only=False)["state_dict"]
        out[f"train/fold{f}/model.pt [tensors]"] = sha_bytes(
            b"".join(k.encode() + bytes.fromhex(sha_array(v.contiguous().numpy())) for k, v in state.items()))
        hist = pd.read_csv(workdir / f"train/fold{f}/history.csv").drop(columns=["seconds", "train_img_per_s"])
        out[f"train/fold{f}/history.csv [no timings]"] = sha_bytes(hist.to_csv(index=False).encode())
        for npz in (f"extract/fold{f}/query.npz", f"extract/fold{f}/reference.npz", f"extract/fold{f}/valid.npz",
                    f"rerank/fold{f}/ranking.npz"):
            with np.load(workdir / npz, allow_pickle=False) as z:
                for name in sorted(z.files):
                    out[f"{npz}:{name}"] = sha_array(z[name])
        out[f"rerank/fold{f}/valid_ap.csv"] = sha_bytes((workdir / f"rerank/fold{f}/valid_ap.csv").read_bytes())
    for name in ("submission/submission.csv", "ensemble/valid_ap.csv"):
        out[name] = sha_bytes((workdir / name).read_bytes())
    ensemble = json.loads((workdir / "ensemble/metrics.json").read_text())
    ensemble.pop("wall")  # the stage's wall time: the one thing that may differ
    out["ensemble/metrics.json [no timings]"] = sha_bytes(json.dumps(ensemble, sort_keys=True).encode())
    return out


def run_pipeline_subprocess(workdir: Path, params: dict) -> None:
    code = ("import json, sys; from pathlib import Path; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']; "
            "from test_determinism import run_pipeline; run_pipeline(Path(sys.argv[2]), json.loads(sys.argv[3]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), str(workdir), json.dumps(params)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_two_runs_give_identical_artefacts(tmp_path, tiny):
    run_pipeline(tmp_path / "a", tiny)
    run_pipeline_subprocess(tmp_path / "b", tiny)
    a, b = artefact_hashes(tmp_path / "a"), artefact_hashes(tmp_path / "b")
    assert set(a) == set(b)
    print()
    for key in a:
        print(f"{'same' if a[key] == b[key] else 'DIFF'} {a[key]} {key}")
    assert {k for k in a if a[k] != b[k]} == set()
    # the resume states were removed after each successful training
    assert not any((tmp_path / "a/checkpoints/train").glob("*/*.pt"))
    sub = (tmp_path / "a/submission/submission.csv").read_text().splitlines()
    assert len(sub) == 1 + 6  # header and the 6 queries
