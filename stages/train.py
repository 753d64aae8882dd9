"""train: one model per fold (``--fold``), trained on the other folds' classes.

Reads   ``--folds`` (outputs/split/folds.csv) and the training images under data.root
Writes  ``--model`` (model.pt: best checkpoint with its rebuild metadata), ``--history``
        (history.csv: loss, lr, validation mAP@1000 per epoch) and ``--metrics`` (best epoch, validation mAP@1000 and P@1, throughput;
        ``wall``: the stage's wall time, and training images x epochs x backbones per second of it)
Keeps   with ``--resume-dir`` (checkpoints/train/fold{k}, outside DVC's outputs): the training
        state after every epoch (last.pt); a run of the same params, data and code resumes
        from it with the same results, and deletes it once the outputs are written; the folder
        is held by one run at a time (``<folder>.lock``: a second run on it is refused)
Runs    in ``--nproc`` processes (DVC passes train.nproc) under torchrun, DistributedDataParallel
        (gloo on the CPU, NCCL on CUDA); it relaunches itself under torchrun, or may be started
        by ``torchrun --nproc-per-node N -m stages.train ...``. Rank 0 alone writes.
Refuses if files under data.root/train change while it runs (exit 2; DVC records no lock)
Params  seed, data.root, cv, model, train
"""
from __future__ import annotations

import logging
import sys

from retrieval.cli import stage, stage_args
from retrieval.data.folds import read_folds
from retrieval.data.images import data_unchanged
from retrieval.io import InputError, write_json
from retrieval.train import distributed
from retrieval.train.fold import train_fold
from retrieval.metrics import VAL_MAP
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv, required="--fold --folds --model --history --metrics",
                         optional="--resume-dir --nproc", ints="--fold --nproc")
    if args.fold not in p.cv.folds:
        raise InputError(f"--fold {args.fold}: not one of cv.folds {p.cv.folds}")
    nproc = p.train.nproc if args.nproc is None else args.nproc
    if nproc > 1 and not distributed.under_torchrun():
        return distributed.relaunch(nproc, "stages.train", sys.argv[1:] if argv is None else list(argv))
    folds = read_folds(args.folds)
    d = distributed.setup()
    if not d.main:
        logging.getLogger("retrieval").setLevel(logging.WARNING)
    try:
        with data_unchanged(p.data.root, "train", ("train",)):  # data changed meanwhile: refused
            metrics = train_fold(p, folds, p.data.root, args.fold, args.model, args.history,
                                 resume_dir=args.resume_dir, d=d)
    finally:
        distributed.teardown(d)
    if not d.main:
        return 0
    write_json(args.metrics, clock.stamp(metrics, images=metrics["train_images"] * p.train.epochs * len(p.model.backbones)))
    print(f"train fold {args.fold}: best epoch {metrics['best_epoch']}, "
          f"val mAP@1000 {metrics[VAL_MAP]:.4f} (epoch 0: {metrics['epoch0_' + VAL_MAP]:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
