"""train: one model per fold, trained on the other folds' classes.

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
Params  seed, data.root, cv, model, train
"""
from __future__ import annotations

import logging
import sys

from retrieval.cli import parser, stage
from retrieval.config import load_params
from retrieval.data.folds import read_folds
from retrieval.io import InputError, write_json
from retrieval.train import distributed
from retrieval.train.loop import VAL_MAP, train_fold
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    ap = parser(__doc__)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--folds", required=True)
    ap.add_argument("--model", required=True, help="checkpoint to write (best epoch)")
    ap.add_argument("--history", required=True, help="per-epoch CSV for dvc plots")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--resume-dir", default=None,
                    help="folder for the per-epoch resume state (last.pt); none kept if omitted")
    ap.add_argument("--nproc", type=int, default=None, help="processes (default: train.nproc)")
    args = ap.parse_args(argv)
    p = load_params(args.params)
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
