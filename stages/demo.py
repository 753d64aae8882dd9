"""demo: generate the small synthetic product-photo data set used when there is no real data.

Reads   ``--params`` (default ``params.yaml``): its ``demo`` section
Writes  ``--out`` (``outputs/demo``): train/<class>/<id>.jpg, test/query/<id>.jpg,
        test/reference/<id>.jpg, truth/query.csv and truth/reference.csv (id,label);
        train/, test/ and truth/ are replaced whole, nothing else under ``--out`` is touched
Params  demo.seed, demo.n_train_classes, demo.n_test_classes, demo.train_per_class,
        demo.queries_per_class, demo.photos_per_ref_class, demo.size
"""
from __future__ import annotations


from retrieval.cli import parser, stage
from retrieval.config import load_params
from retrieval.data.demo import make_demo


@stage
def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--out", required=True, help="directory to write the data set into")
    args = ap.parse_args(argv)
    counts = make_demo(args.out, **load_params(args.params).demo.model_dump())
    print(f"demo: {counts['train_images']} train images of {counts['train_classes']} classes, "
          f"{counts['queries']} queries and {counts['references']} references of "
          f"{counts['test_classes']} unseen classes -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
