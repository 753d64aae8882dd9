"""report: a retrieval report to look at: outputs/report/index.html and grid.png.

Reads   each fold's ``valid.npz`` (``--valid``, a pattern with {fold}: labels and roles) and
        ``valid_ranking.npz`` (``--valid-ranking``: its validation queries as rerank ranked them),
        ``--folds`` (image paths), the ``--submission`` and the test images under data.root
Writes  ``--out``/index.html (self-contained: thumbnails embedded) with the validation summary,
        sample validation queries worst to best with their top references marked right or
        wrong, per-class AP (hardest first), the most confused class pairs and sample test
        queries; and ``--out``/grid.png (the validation rows); ``--metrics`` (optional): what it
        shows and the stage's wall time (``wall``)
Params  data.root, cv.folds, report
"""
from __future__ import annotations


from retrieval.cli import parser, stage
from retrieval.config import load_params
from retrieval.data.folds import read_folds
from retrieval.io import write_json
from retrieval.results.report import make_report
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    ap = parser(__doc__)
    ap.add_argument("--valid", required=True, help="validation feature files, pattern with {fold}")
    ap.add_argument("--valid-ranking", required=True, help="rerank's validation rankings, pattern with {fold}")
    ap.add_argument("--folds", required=True)
    ap.add_argument("--submission", required=True)
    ap.add_argument("--out", required=True, help="directory for index.html and grid.png")
    ap.add_argument("--metrics", help="JSON of what the report shows and the stage's wall time")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    folds = read_folds(args.folds)
    info = make_report(p, p.data.root, folds, [args.valid.format(fold=f) for f in p.cv.folds],
                       [args.valid_ranking.format(fold=f) for f in p.cv.folds], args.submission, args.out)
    if args.metrics:
        write_json(args.metrics, clock.stamp(info))
    print(f"report: {args.out}/index.html ({info['valid_examples']} validation and {info['test_examples']} "
          f"test queries; hardest class {info['hardest_class']}), {args.out}/grid.png {info['grid_size']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
