"""extract: L2-normalised float32 embeddings, with their ids, from one fold's model (``--fold``).

Reads   ``--model`` (outputs/train/fold{k}/model.pt: one backbone's model, or several),
        ``--folds``, images under data.root
Writes  ``--query``, ``--reference`` (test sets) and ``--valid`` (the fold's validation images,
        with labels and roles) feature files, ``--whitening`` (the PCA whitening of each
        backbone, learned on the fold's training classes, or 'none'), and ``--metrics`` (images
        per second; with several backbones their weights, and how they were chosen; ``wall``:
        the stage's wall time, and its query, reference and validation images per second of it)
Keeps   with ``--resume-dir`` and extract.shard_size > 0: the finished shards of embeddings
        (checkpoints/extract/fold{k}, outside DVC's outputs), so a killed run continues; deleted
        once the outputs are written; held by one run at a time (a second is refused)
Params  data.root, extract (image_size, scales and flip_tta for TTA, whiten_dim and whiten_power; member_weights
        and member_weight_step for several backbones; an undecodable test image is an error;
        with extract.bad_query: empty an undecodable query keeps a zero row and is listed in
        the query file's meta)
Runs    in ``--nproc`` processes (default extract.nproc) under torchrun: each embeds a contiguous
        slice of every set and gets the others' rows (one GPU a process on CUDA, gloo on the CPU);
        rank 0 alone writes. Not with extract.shard_size > 0
Refuses if files under data.root/train or /test change while it runs (exit 2, nothing written);
        the feature files' meta records the model's fingerprint and the data listing's digest
"""
from __future__ import annotations

import os
import shutil
import sys

from retrieval.cli import stage, stage_args
from retrieval.data.folds import read_folds
from retrieval.data.images import data_unchanged
from retrieval.embed.extract import extract_fold
from retrieval.embed.feature_file import save_features
from retrieval.embed.tta import sharded_over
from retrieval.embed.whitening import save_whitening
from retrieval.io import InputError, claimed, write_json
from retrieval.model.checkpoints import models_from_checkpoint
from retrieval.resources import compute_device, set_threads
from retrieval.timing import Clock
from retrieval.train import distributed


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv, required="--fold --model --folds --query --reference --valid --whitening "
                                                 "--metrics", optional="--resume-dir --nproc", ints="--fold --nproc")
    nproc = p.extract.nproc if args.nproc is None else args.nproc
    if p.extract.shard_size and max(nproc, int(os.environ.get("WORLD_SIZE", 1))) > 1:
        raise InputError(f"extract.shard_size {p.extract.shard_size} with {nproc} processes: shards are written by "
                         "one process; set extract.shard_size: 0 or extract.nproc: 1")
    if nproc > 1 and not distributed.under_torchrun():
        return distributed.relaunch(nproc, "stages.extract", sys.argv[1:] if argv is None else list(argv))
    d = distributed.setup()
    set_threads(0, d.on_node)  # every core this process may use (its share under torchrun)
    device = compute_device(d.local_rank)
    models = [(model.to(device), meta) for model, meta in models_from_checkpoint(args.model)]
    folds = read_folds(args.folds)
    with claimed(args.resume_dir if d.main else None), sharded_over(d):  # a second run on the same shards is refused
        with data_unchanged(p.data.root, "extract") as data:  # data changed meanwhile: refused, nothing written
            feats, whitenings, metrics = extract_fold(p.extract, p.data.root, folds, args.fold, models,
                                                      args.resume_dir, data_listing=data)
        if not d.main:
            distributed.teardown(d)
            return 0  # rank 0 writes
        for name, f in feats.items():
            save_features(getattr(args, name), f)
        save_whitening(args.whitening, whitenings, {"fold": args.fold,
                                                    "model_fingerprint": feats["query"].meta["model_fingerprint"]})
        write_json(args.metrics, clock.stamp(metrics, images=metrics["images"]))
        if args.resume_dir and os.path.isdir(args.resume_dir):
            shutil.rmtree(args.resume_dir)  # finished: the shards are in the outputs now
    distributed.teardown(d)
    print(f"extract fold {args.fold}: {metrics['images']} images, "
          + ", ".join(f"{k} {v:.1f} img/s" for k, v in metrics["img_per_s"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
