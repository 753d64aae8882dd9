"""extract: L2-normalised float32 embeddings, with their ids, from one fold's model.

Reads   ``--model`` (outputs/train/fold{k}/model.pt), ``--folds``, images under data.root
Writes  ``--query``, ``--reference`` (test sets) and ``--valid`` (the fold's validation images,
        with labels and roles) feature files, and ``--metrics`` (images per second)
Params  data.root, extract (an undecodable test image is an error; with extract.bad_query:
        empty an undecodable query keeps a zero row and is listed in the query file's meta)
"""
from __future__ import annotations

import argparse
import os
import numpy as np
import pandas as pd
import torch

from retrieval.cli import stage
from retrieval.config import load_params
from retrieval.data import check_test_images, scan_test
from retrieval.embed import embed_images
from retrieval.features import Features, save_features
from retrieval.io import write_json
from retrieval.model import model_from_checkpoint


@stage
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--folds", required=True)
    for name in ("query", "reference", "valid"):
        ap.add_argument(f"--{name}", required=True, help=f"feature file to write for the {name} images")
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args(argv)
    p = load_params(args.params)
    xp, root = p.extract, p.data.root
    torch.set_num_threads(os.cpu_count() or 1)
    model, meta = model_from_checkpoint(args.model)
    folds = pd.read_csv(args.folds, dtype=str, keep_default_na=False)
    valid = folds[folds["fold"] == str(args.fold)]
    sets = {"query": scan_test(root, "query"), "reference": scan_test(root, "reference"), "valid": valid}
    empty = check_test_images(root, sets["query"], sets["reference"], xp.bad_query)
    info = {"fold": args.fold, "backbone": meta["backbone"], "image_size": xp.image_size, "flip_tta": xp.flip_tta}
    rates = {}
    for name, df in sets.items():
        # an undecodable query (bad_query: empty) keeps its id with a zero row, listed in meta
        skip = df["id"].isin(empty).to_numpy() if name == "query" else np.zeros(len(df), bool)
        emb = np.zeros((len(df), meta["embedding_dim"]), np.float32)
        emb[~skip], rates[name] = embed_images(model, meta, root, df["image"][~skip].tolist(), xp.image_size,
                                               xp.batch_size, xp.flip_tta, xp.num_workers, desc=f"extract {name}")
        extra = {"empty_queries": empty} if name == "query" else {}
        save_features(getattr(args, name), Features(df["id"], emb, df.get("label"), df.get("role"), {**info, **extra}))
    n = sum(len(d) for d in sets.values())
    write_json(args.metrics, {"images": n, "empty_queries": len(empty),
                              "img_per_s": {k: round(v, 2) for k, v in rates.items()}})
    print(f"extract fold {args.fold}: {n} images, " + ", ".join(f"{k} {v:.1f} img/s" for k, v in rates.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
