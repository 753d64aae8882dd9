"""Research: PCA whitening learned on the unlabelled search images instead of the training classes.

The extract stage whitens with a projection learned on the fold's training-class images. This
script takes a finished run's feature files, recovers each embedding from before whitening
(the whitening is invertible at full dimension, and the embedding had unit norm: the positive
root of ``|mean + c z| = 1``), learns a new whitening on the images that are searched, without
labels (for the test features: the test queries and references; for the validation features:
the fold's validation queries and references), and writes feature files in the same format for
``bench/chains.py --extract`` to rank, fuse and score beside the run's own.

    python bench/gallery_whitening.py --run /work/runs/grocery --features /work/runs/grocery/gw_extract
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from retrieval.embed.feature_file import Features, load_features, save_features  # noqa: E402
from retrieval.embed.whitening import apply_whitening, fit_pca_whitening, load_whitening, whitening_dim  # noqa: E402


def unwhiten(y: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """The unit-norm embeddings ``x`` whose whitening is ``y`` (rows of ``normalise((x - mean) P)``)."""
    z = np.asarray(y, np.float64) @ np.linalg.inv(projection.astype(np.float64))
    m = mean.astype(np.float64)
    zz, mz, mm = (z * z).sum(1), z @ m, m @ m
    c = (-mz + np.sqrt(mz ** 2 - zz * (mm - 1.0))) / np.maximum(zz, 1e-30)
    return (m + c[:, None] * z).astype(np.float32)


def rewhiten(sets: list[Features], whitening: tuple, power: float) -> tuple[list[Features], float]:
    """The ``sets`` whitened by a projection learned on all their rows; the recovery's worst error."""
    raw = [unwhiten(s.embeddings, *whitening) for s in sets]
    error = max(float(np.abs(apply_whitening(r, *whitening) - s.embeddings).max()) for r, s in zip(raw, sets))
    stacked = np.concatenate(raw)
    w = fit_pca_whitening(stacked, whitening_dim(whitening[1].shape[1], len(stacked), stacked.shape[1]), power=power)
    out = [Features(s.ids, apply_whitening(r, *w), s.labels, s.roles, s.meta) for r, s in zip(raw, sets)]
    return out, error


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished bench/pipeline.py work folder")
    ap.add_argument("--features", required=True, help="folder for the new feature files (fold<i>/{query,reference,valid}.npz)")
    args = ap.parse_args(argv)
    run, out = Path(args.run), Path(args.features)
    params = yaml.safe_load((run / "params.yaml").read_text())
    power = params["extract"]["whiten_power"]
    report = {}
    for f in params["cv"]["folds"]:
        x = run / f"outputs/extract/fold{f}"
        (whitening,) = load_whitening(x / "whitening.npz")  # one backbone
        q, r, v = (load_features(x / f"{n}.npz") for n in ("query", "reference", "valid"))
        (q2, r2), err_test = rewhiten([q, r], whitening, power)
        (v2,), err_valid = rewhiten([v], whitening, power)
        (out / f"fold{f}").mkdir(parents=True, exist_ok=True)
        for name, feats in (("query", q2), ("reference", r2), ("valid", v2)):
            save_features(out / f"fold{f}" / f"{name}.npz", feats)
        report[f"fold{f}"] = {"recovery_max_abs_error": max(err_test, err_valid)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
