"""demo: generate the small synthetic product-photo data set used when there is no real data.

Reads   ``--params`` (default ``params.yaml``): its ``demo`` section
Writes  ``--out`` (``outputs/demo``): train/<class>/<id>.jpg, test/query/<id>.jpg,
        test/reference/<id>.jpg, truth/query.csv and truth/reference.csv (id,label);
        train/, test/ and truth/ are replaced whole, nothing else under ``--out`` is touched;
        ``--metrics`` (optional): the counts and the stage's wall time (``wall``)
Params  demo.seed, demo.n_train_classes, demo.n_test_classes, demo.train_per_class,
        demo.queries_per_class, demo.photos_per_ref_class, demo.size
"""
from __future__ import annotations


from retrieval.cli import stage, stage_args
from retrieval.data.demo import make_demo
from retrieval.io import write_json
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv, required="--out", optional="--metrics")
    counts = make_demo(args.out, **p.demo.model_dump())
    if args.metrics:
        write_json(args.metrics, clock.stamp(counts, images=counts["train_images"] + counts["queries"] + counts["references"]))
    print(f"demo: {counts['train_images']} train images of {counts['train_classes']} classes, "
          f"{counts['queries']} queries and {counts['references']} references of "
          f"{counts['test_classes']} unseen classes -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
