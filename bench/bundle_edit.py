"""How long a bundle's ``add`` and ``remove`` take: the real gallery, and a large synthetic one.

    python bench/bundle_edit.py --bundle /work/runs/grocery/outputs/bundle --images /work/shared/data/grocery/test/query
        --out bench/results/bundle_edit_grocery.json [--add 10] [--large 36748] [--large-folds 1]

On a copy of ``--bundle`` (in a temporary folder): :func:`retrieval.bundle.add_references` of
``--add`` images of ``--images`` (new ids), then :func:`retrieval.bundle.remove_references` of
them, each timed whole (embedding the images with every fold, DBA recomputed over all the
references, the faiss indexes rebuilt, every file rewritten and fsynced, the swap); and apart,
one fold's DBA over the references, the part that grows as N^2 (an exact k-NN of every
reference among all of them).

Then the same on a synthetic bundle of ``--large`` references (the given one's models, settings
and first ``--large-folds`` folds; seeded random unit vectors as the references, one thumbnail
for all): its build, the add and the remove (each holds one DBA a fold). A bundle of F folds
embeds the added images, runs the DBA and writes the index and arrays once a fold:
``large_estimate_all_folds_s`` scales the measured times by F / ``--large-folds`` (an upper
bound: the thumbnails, the manifest and the swap are paid once).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import save_result  # noqa: E402
from bench.serve import read_queries  # noqa: E402
from retrieval.bundle import Bundle, add_references, decode_image, remove_references  # noqa: E402
from retrieval.bundle.edit import read_parts, replace_bundle  # noqa: E402
from retrieval.bundle.layout import Parts, searched_vectors  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return round(time.perf_counter() - start, 3)


def add_and_remove(path: Path, images: list, tag: str) -> dict:
    """Seconds to add ``images`` (ids ``<tag>_000``..) to the bundle at ``path``, then remove them."""
    ids = [f"{tag}_{i:03d}" for i in range(len(images))]
    n = len(Bundle.open(path).ids)
    out = {"references": n, "add_s": timed(lambda: add_references(path, ids, images)),
           "remove_s": timed(lambda: remove_references(path, ids))}
    assert len(Bundle.open(path).ids) == n
    return out


def dba_s(parts: Parts) -> float:
    """One fold's DBA over the references (as :func:`write_bundle` computes it)."""
    fold = next(iter(parts.raw))
    return timed(lambda: searched_vectors(parts.raw[fold], parts.settings))


def synthetic(parts: Parts, n: int, folds: int, seed: int = 0) -> Parts:
    """``parts`` with ``n`` random references over its first ``folds`` folds."""
    rng = np.random.default_rng(seed)
    keep = parts.settings["folds"][:folds]
    raw = {}
    for f in keep:
        v = rng.standard_normal((n, f["dim"])).astype(np.float32)
        raw[f["fold"]] = v / np.linalg.norm(v, axis=1, keepdims=True)
    thumb = next(iter(parts.thumbnails))[1]
    ids = [f"syn{i:06d}" for i in range(n)]
    models = {m["onnx"]: parts.models[m["onnx"]] for f in keep for m in f["members"]}
    whitenings = {k: v for k, v in parts.whitenings.items() if any(k.startswith(f"fold{f['fold']}_") for f in keep)}
    return Parts({**parts.settings, "folds": keep}, parts.params, models, whitenings, ids, raw,
                 [(i, thumb) for i in ids])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--images", required=True, type=Path, help="folder of images to add")
    ap.add_argument("--out", required=True)
    ap.add_argument("--add", type=int, default=10)
    ap.add_argument("--large", type=int, default=36748, help="references of the synthetic bundle (0: none)")
    ap.add_argument("--large-folds", type=int, default=1)
    args = ap.parse_args(argv)
    images = [decode_image(data, name) for name, data in read_queries(args.images, args.add)]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(args.bundle, copy)
        parts = read_parts(copy)
        folds = len(parts.settings["folds"])
        out = {"bundle": str(args.bundle), "folds": folds, "added": len(images),
               **add_and_remove(copy, images, "new"), "dba_one_fold_s": dba_s(parts)}
        print(json.dumps(out), flush=True)
        if args.large:
            large = synthetic(parts, args.large, args.large_folds)
            big = Path(tmp) / "large"
            build = timed(lambda: replace_bundle(big, large))
            shutil.rmtree(copy)
            res = add_and_remove(big, images, "new")
            out["large"] = {"folds": args.large_folds, "build_s": build, **res}
            out["large_estimate_all_folds_s"] = {k: round(res[f"{k}_s"] / args.large_folds * folds, 1) for k in ("add", "remove")}
    print(json.dumps(out, indent=1))
    save_result(args.out, out, None if argv is None else ["bench/bundle_edit.py", *map(str, argv)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
