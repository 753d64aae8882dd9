"""report: a retrieval report to look at: outputs/report/index.html and grid.png.

Reads   each fold's ``valid.npz`` (``--valid``, a pattern with {fold}), ``--folds`` (image paths),
        the ``--submission`` and the test images under data.root
Writes  ``--out``/index.html (self-contained: thumbnails embedded) with the validation summary,
        sample validation queries worst to best with their top references marked right or
        wrong, per-class AP (hardest first), the most confused class pairs and sample test
        queries; and ``--out``/grid.png (the validation rows); ``--metrics`` (optional): what it
        shows and the stage's wall time (``wall``)
Params  data.root, cv.folds, rerank (validation is ranked as the pipeline ranks), report
"""
from __future__ import annotations

import argparse

import pandas as pd

from retrieval.cli import stage
from retrieval.config import load_params
from retrieval.io import write_json
from retrieval.report import make_report
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--valid", required=True, help="validation feature files, pattern with {fold}")
    ap.add_argument("--folds", required=True)
    ap.add_argument("--submission", required=True)
    ap.add_argument("--out", required=True, help="directory for index.html and grid.png")
    ap.add_argument("--metrics", help="JSON of what the report shows and the stage's wall time")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    folds = pd.read_csv(args.folds, dtype=str, keep_default_na=False)
    info = make_report(p, p.data.root, folds, [args.valid.format(fold=f) for f in p.cv.folds],
                       args.submission, args.out)
    if args.metrics:
        write_json(args.metrics, clock.stamp(info))
    print(f"report: {args.out}/index.html ({info['valid_examples']} validation and {info['test_examples']} "
          f"test queries; hardest class {info['hardest_class']}), {args.out}/grid.png {info['grid_size']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
