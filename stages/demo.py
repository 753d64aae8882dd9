"""demo: generate the small synthetic product-photo data set used when there is no real data.

Reads   ``--params`` (default ``params.yaml``): its ``demo`` section, and ``data.root``
Writes  ``--out`` (``outputs/demo``): train/<class>/<id>.jpg, test/query/<id>.jpg,
        test/reference/<id>.jpg, truth/query.csv and truth/reference.csv (id,label) and the
        marker generated-by-demo.txt; train/, test/ and truth/ are replaced whole, nothing else
        under ``--out`` is touched. Only when ``data.root`` is ``--out``: otherwise nothing is
        generated (``--out`` is created empty if absent). A folder the stage did not write (no
        marker, not empty) or a symbolic link is refused, exit 2, and left as it is.
        ``--metrics`` (optional): the counts (0 when nothing was generated) and the wall time (``wall``)
Params  data.root, demo.seed, demo.n_train_classes, demo.n_test_classes, demo.train_per_class,
        demo.queries_per_class, demo.photos_per_ref_class, demo.size
"""
from __future__ import annotations

import logging
from pathlib import Path

from retrieval.cli import stage, stage_args
from retrieval.io import write_json
from retrieval.timing import Clock
from synthetic.dataset import is_demo_root, make_demo

NOTHING = {"train_images": 0, "queries": 0, "references": 0, "train_classes": 0, "test_classes": 0}


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv, required="--out", optional="--metrics")
    if is_demo_root(p.data.root, args.out):
        counts = make_demo(args.out, p.demo)
    else:
        counts = NOTHING
        if not Path(args.out).exists() and not Path(args.out).is_symlink():
            Path(args.out).mkdir(parents=True)  # DVC's output; empty, so a later demo run may fill it
    if args.metrics:
        write_json(args.metrics, clock.stamp(counts, images=counts["train_images"] + counts["queries"] + counts["references"]))
    if counts is NOTHING:
        logging.getLogger("demo").info("data.root is %s, not %s: no demo set generated", p.data.root, args.out)
        return 0
    print(f"demo: {counts['train_images']} train images of {counts['train_classes']} classes, "
          f"{counts['queries']} queries and {counts['references']} references of "
          f"{counts['test_classes']} unseen classes -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
