"""report: a retrieval report to look at: outputs/report/index.html and grid.png.

Reads   each fold's ``valid.npz`` (``--valid``, a pattern with {fold}: labels and roles) and
        ``valid_ranking.npz`` (``--valid-ranking``: its validation queries as rerank ranked them),
        ``--folds`` (image paths), the ``--submission`` and the test images under data.root;
        for the run's charts, each fold's ``--history`` (train's history.csv) and ``--ablation``
        (rerank's ablation.csv), patterns with {fold}, and every earlier stage's metrics (their
        wall time; train's kept model and WiSE-FT mixes): ``--demo-metrics``, ``--check-metrics``,
        ``--split-metrics``, ``--train-metrics``, ``--extract-metrics``, ``--rerank-metrics``
        (patterns with {fold}) and ``--ensemble-metrics``; a fold's missing history or ablation
        is left out, logged
Writes  ``--out``/index.html (self-contained: thumbnails embedded) with the validation summary,
        sample validation queries worst to best with their top references marked right or
        wrong, per-class AP (hardest first), the most confused class pairs and sample test
        queries; and ``--out``/grid.png (the validation rows); ``--metrics`` (optional): what it
        shows and the stage's wall time (``wall``)
Params  data.root, cv.folds, report
"""
from __future__ import annotations


from retrieval.cli import stage, stage_args
from retrieval.data.folds import read_folds
from retrieval.io import write_json
from retrieval.results.report import make_report
from retrieval.results.run_section import run_section
from retrieval.results.summary import BEFORE_REPORT
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv, required="--valid --valid-ranking --folds --submission --out --history "
                         "--ablation " + " ".join(f"--{s}-metrics" for s in BEFORE_REPORT), optional="--metrics")
    run_html, run_info = run_section(p.cv.folds, args.history, args.ablation,
                                     {s: getattr(args, f"{s}_metrics") for s in BEFORE_REPORT})
    folds = read_folds(args.folds)
    info = make_report(p, p.data.root, folds, [args.valid.format(fold=f) for f in p.cv.folds],
                       [args.valid_ranking.format(fold=f) for f in p.cv.folds], args.submission, args.out,
                       run_html)
    if args.metrics:
        write_json(args.metrics, clock.stamp({**info, **run_info}))
    print(f"report: {args.out}/index.html ({info['valid_examples']} validation and {info['test_examples']} "
          f"test queries; hardest class {info['hardest_class']}), {args.out}/grid.png {info['grid_size']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
