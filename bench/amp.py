"""What bf16 autocast costs in accuracy and buys in speed at extraction, on a trained model.

    python bench/amp.py --model outputs/train/fold0/model.pt --folds outputs/split/folds.csv \
        --fold 0 --root ../shared/data/grocery --out bench/results/amp_grocery.json

Embeds the fold's validation images twice with the pipeline's ``embed_images`` (224 px, flip
TTA, channels-last, one loader worker): in fp32 and with bf16 autocast. Prints and saves, for
each, images per second and validation mAP@1000 / P@1 of plain cosine search (queries against
references, no re-ranking), and the largest difference between the two sets of embeddings.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import save_result  # noqa: E402
from retrieval.embed.tta import embed_images  # noqa: E402
from retrieval.metrics import retrieval_metrics  # noqa: E402
from retrieval.model.checkpoints import model_from_checkpoint  # noqa: E402
from retrieval.rank.knn import knn  # noqa: E402
from retrieval.resources import set_threads  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--folds", required=True)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    set_threads(0)
    model, meta = model_from_checkpoint(args.model)
    folds = pd.read_csv(args.folds, dtype=str, keep_default_na=False)
    valid = folds[folds["fold"] == str(args.fold)].reset_index(drop=True)
    q = (valid["role"] == "query").to_numpy()
    labels = valid["label"].to_numpy()
    out, emb = {"model": args.model, "fold": args.fold, "images": int(len(valid)), "size": args.size}, {}
    for amp in ("off", "bf16"):
        e, rate = embed_images(model, meta, args.root, valid["image"].tolist(), args.size, 64, True, 1, amp, True)
        m = retrieval_metrics(knn(e[q], e[~q], 1000)[1], labels[q], labels[~q], 1000)
        emb[amp] = e
        out[amp] = {"img_per_s": round(rate, 1), "map@1000": round(m["map@1000"], 4), "p@1": round(m["p@1"], 4)}
        print(f"{amp:5s} {rate:6.1f} img/s  val mAP@1000 {m['map@1000']:.4f}  P@1 {m['p@1']:.4f}", flush=True)
    out["max_abs_diff"] = float(np.abs(emb["off"] - emb["bf16"]).max())
    out["min_cosine"] = float((emb["off"] * emb["bf16"]).sum(1).min())
    print(f"embeddings: max |fp32 - bf16| {out['max_abs_diff']:.4f}, min cosine {out['min_cosine']:.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_result(args.out, out, None if argv is None else ["bench/amp.py", *argv])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
