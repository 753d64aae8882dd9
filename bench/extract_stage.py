"""The whole extract stage under each ``extract.runtime``, paired: images per second and equal embeddings.

    python bench/extract_stage.py --data /work/shared/data/grocery --out bench/results/extract_stage_grocery.json
        [--model /work/runs/grocery/outputs/train/fold0/model.pt] [--queries 100 --references 100
         --train-per-class 6] [--reps 3] [--runtimes torch onnxruntime] [--work DIR]

A subset of ``--data`` (links to its first images: ``--queries``, ``--references``, and
``--train-per-class`` of every training class) is split into folds by the split stage, then
``stages.extract`` (its ``main``, in this process) runs fold 0 on it with each runtime in turn,
alternating, ``--reps`` rounds, every other param as params.yaml has it (torch: extract.amp
``auto``, bf16 on a CPU with AVX-512 BF16 or AMX: today's default; onnxruntime: fp32). Each run
is timed whole (model load, the ONNX export, every set: the whitening's training images,
validation, queries, references) and its metrics' images per second of each set are kept; the
best round of each runtime counts. Embeddings: each runtime's (before whitening) against torch's
in fp32 (amp off) on the first 32 queries; the runs' query features against each other (cosine,
and the top 10 references of each query). Without ``--model``, an
ImageNet-initialised model of params.yaml's ``model`` (speed does not depend on training).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import save_result  # noqa: E402
from retrieval.data.images import IMAGE_EXTENSIONS  # noqa: E402
from retrieval.resources import usable_cores  # noqa: E402

FP32_QUERIES = 32


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def link_subset(data: Path, root: Path, queries: int, references: int, per_class: int) -> None:
    """``root``: the competition layout of links to ``data``'s first images."""
    for part, n in (("query", queries), ("reference", references)):
        (root / "test" / part).mkdir(parents=True)
        for p in images_in(data / "test" / part)[:n]:
            os.symlink(p, root / "test" / part / p.name)
    for cls in sorted(c for c in (data / "train").iterdir() if c.is_dir()):
        (root / "train" / cls.name).mkdir(parents=True)
        for p in images_in(cls)[:per_class]:
            os.symlink(p, root / "train" / cls.name / p.name)


def write_params(work: Path, root: Path, runtime: str) -> Path:
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["root"] = str(root)
    raw["extract"]["runtime"] = runtime
    path = work / f"params_{runtime}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def extract_once(work: Path, params: Path, model: Path, tag: str) -> tuple[float, dict]:
    """One run of the extract stage (fold 0): its wall seconds and metrics."""
    from stages.extract import main as extract

    out = work / tag
    files = {name: out / f"{name}.npz" for name in ("query", "reference", "valid", "whitening")}
    argv = ["--params", str(params), "--fold", "0", "--model", str(model), "--folds", str(work / "folds.csv"),
            *[a for name, f in files.items() for a in (f"--{name}", str(f))], "--metrics", str(out / "metrics.json")]
    start = time.perf_counter()
    if extract(argv) != 0:
        raise SystemExit(f"error: the extract stage failed ({tag})")
    return time.perf_counter() - start, json.loads((out / "metrics.json").read_text())


def model_file(work: Path, given: str | None) -> Path:
    """``given``, or an ImageNet-initialised model of params.yaml written as a checkpoint."""
    if given:
        return Path(given)
    from retrieval.config import load_params
    from retrieval.model.checkpoints import save_members
    from retrieval.model.network import build_model

    model, meta = build_model(load_params(ROOT / "params.yaml").model)
    save_members(work / "model.pt", [(model.state_dict(), meta)])
    return work / "model.pt"


def raw_cosines(model: Path, root: Path, n: int, runtimes: list[str]) -> dict:
    """Each runtime's embeddings (before whitening, the stage's :func:`embed_tta` with its amp
    and runtime) of the first ``n`` queries against torch's in fp32 (amp off): min and mean cosine."""
    from retrieval.config import load_params
    from retrieval.data.images import IMAGE, scan_test
    from retrieval.embed.tta import embed_tta
    from retrieval.model.checkpoints import model_from_checkpoint

    xp = load_params(ROOT / "params.yaml").extract
    net, meta = model_from_checkpoint(model)
    images = scan_test(root, "query")[IMAGE][:n].tolist()
    run = lambda amp, runtime: embed_tta(net, meta, root, images, xp.image_size, xp.scales, xp.flip_tta,  # noqa: E731
                                         xp.batch_size, 0, amp=amp, runtime=runtime)[0]
    fp32 = run("off", "torch")
    cos = {r: (run(xp.amp, r) * fp32).sum(1) for r in runtimes}
    return {r: {"min": float(c.min()), "mean": float(c.mean())} for r, c in cos.items()}


def top_equal(a: dict, b: dict, k: int) -> float:
    """The share of queries whose top ``k`` references (cosine) are the same, in order, under ``a`` and ``b``."""
    top = lambda f: np.argsort(-(f["query"] @ f["reference"].T), axis=1, kind="stable")[:, :k]  # noqa: E731
    return float((top(a) == top(b)).all(axis=1).mean())


def set_images(work: Path, metrics: dict) -> int:
    """The images one run embeds: its sets' (metrics ``images``) and the whitening's training images."""
    import pandas as pd

    folds = pd.read_csv(work / "folds.csv")
    return int(metrics["images"]) + int((folds["fold"] != 0).sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--references", type=int, default=100)
    ap.add_argument("--train-per-class", type=int, default=6)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    ap.add_argument("--work", type=Path, help="a folder for the subset and the runs (default: a temporary one)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        link_subset(args.data, work / "data", args.queries, args.references, args.train_per_class)
        params = {r: write_params(work, work / "data", r) for r in args.runtimes}
        from stages.split import main as split

        split(["--params", str(params[args.runtimes[0]]), "--out", str(work / "folds.csv"), "--metrics", str(work / "split.json")])
        model = model_file(work, args.model)
        walls, sets = {r: [] for r in args.runtimes}, {r: [] for r in args.runtimes}
        for rep in range(args.reps):
            for r in args.runtimes:  # alternated: a slow spell of the shared machine hits both
                wall, metrics = extract_once(work, params[r], model, r)
                walls[r].append(wall)
                sets[r].append(metrics["img_per_s"])
                print(f"round {rep} {r}: {wall:.1f} s", flush=True)
        n_images = set_images(work, metrics)
        feats = {r: {s: np.load(work / r / f"{s}.npz")["embeddings"] for s in ("query", "reference")} for r in args.runtimes}
        raw = raw_cosines(model, work / "data", min(FP32_QUERIES, args.queries), args.runtimes)
    best = {r: min(w) for r, w in walls.items()}
    base = args.runtimes[0]
    out = {"data": str(args.data), "model": args.model or "ImageNet-initialised (params.yaml model)",
           "queries": args.queries, "references": args.references, "train_per_class": args.train_per_class,
           "images_per_run": n_images, "reps": args.reps, "cores": usable_cores(), "fold": 0,
           "stage_wall_s": {r: [round(w, 2) for w in ws] for r, ws in walls.items()},
           "stage_img_per_s": {r: round(n_images / b, 2) for r, b in best.items()},
           f"speedup_vs_{base}": {r: round(best[base] / b, 3) for r, b in best.items()},
           "set_img_per_s_best": {r: {k: max(m[k] for m in ms) for k in ms[0]} for r, ms in sets.items()},
           "raw_cosine_vs_torch_fp32_first_queries": raw,
           "query_features_min_cosine_vs_" + base: {r: float((feats[r]["query"] * feats[base]["query"]).sum(1).min())
                                                     for r in args.runtimes},
           "query_top10_references_equal_share_vs_" + base: {r: top_equal(feats[r], feats[base], 10) for r in args.runtimes},
           "note": "stage_img_per_s: images one run embeds (all its sets and the whitening's training images) / its "
                   "best wall time, model load and ONNX export included; query features are whitened with each run's "
                   "own whitening (learned on its own embeddings, from few images here: it magnifies small "
                   "differences), so raw_cosine_vs_torch_fp32_first_queries is the embeddings' equality; "
                   "query_top10_references_equal_share: queries whose cosine top 10 among the references is the "
                   "same, in order"}
    print(json.dumps(out, indent=1))
    save_result(args.out, out, None if argv is None else ["bench/extract_stage.py", *map(str, argv)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
