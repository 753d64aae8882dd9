"""split: folds over classes, with a query/reference division of each validation fold.

Reads   ``<data.root>/train/<class>/<image>``
Writes  ``--out`` (``outputs/split/folds.csv``: image,id,label,fold,role) and ``--metrics``
        (counts; undecodable training images are skipped, counted there and logged by path;
        the stage's wall time and images decoded per second, ``wall``)
Refuses if files under data.root/train change while it reads them (exit 2)
Params  seed, data.root, cv.n_folds, split.query_fraction; and, to refuse a fold of cv.folds
        that could not train as the check stage does, cv.folds, train.sampler, m_per_class, batch_size
"""
from __future__ import annotations

import logging

from retrieval.checks import checked_folds
from retrieval.cli import stage, stage_args
from retrieval.data.folds import fold_summary, write_folds
from retrieval.data.images import data_unchanged, drop_undecodable, scan_train
from retrieval.io import write_json
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv, required="--out --metrics")
    with data_unchanged(p.data.root, "split", ("train",)):  # data changed meanwhile: refused
        train, skipped = drop_undecodable(scan_train(p.data.root), p.data.root)
    folds = checked_folds(p, train)  # as the check stage did, on the images that decode
    write_folds(args.out, folds)
    summary = fold_summary(folds)
    write_json(args.metrics, clock.stamp({"images": len(folds), "classes": int(folds["label"].nunique()),
                                          "skipped_images": len(skipped), **summary}, images=len(train) + len(skipped)))
    logging.getLogger("split").info("%d images of %d classes in %d folds -> %s", len(folds),
                                    folds["label"].nunique(), p.cv.n_folds, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
