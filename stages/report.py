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
Refuses a validation ranking not made from the fold's validation features, features made from
        other data than data.root holds, or data that changes while it runs (exit 2)
Params  data.root, cv.folds, report
"""
from __future__ import annotations


from retrieval.cli import stage, stage_args
from retrieval.data.folds import read_folds
from retrieval.data.images import data_unchanged
from retrieval.embed.feature_file import load_feature_meta
from retrieval.io import InputError, write_json
from retrieval.rank.ranking_file import load_ranking
from retrieval.results.report import make_report
from retrieval.results.run_section import run_section
from retrieval.results.summary import BEFORE_REPORT
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv, required="--valid --valid-ranking --folds --submission --out --history "
                         "--ablation " + " ".join(f"--{s}-metrics" for s in BEFORE_REPORT), optional="--metrics")
    valid, ranked = ([pattern.format(fold=f) for f in p.cv.folds] for pattern in (args.valid, args.valid_ranking))
    with data_unchanged(p.data.root, "report") as data:  # data changed meanwhile: refused
        for fold, v, r in zip(p.cv.folds, valid, ranked):
            check_made_together(fold, v, r, data)
        run_html, run_info = run_section(p.cv.folds, args.history, args.ablation,
                                         {s: getattr(args, f"{s}_metrics") for s in BEFORE_REPORT})
        info = make_report(p, p.data.root, read_folds(args.folds), valid, ranked, args.submission, args.out,
                           run_html)
    if args.metrics:
        write_json(args.metrics, clock.stamp({**info, **run_info}))
    print(f"report: {args.out}/index.html ({info['valid_examples']} validation and {info['test_examples']} "
          f"test queries; hardest class {info['hardest_class']}), {args.out}/grid.png {info['grid_size']}")
    return 0


def check_made_together(fold: int, valid_path: str, ranking_path: str, data: str) -> None:
    """Refuse a fold's validation ranking not made from its validation features, or features
    not made from the data under data.root now (its listing's digest ``data``)."""
    meta = load_feature_meta(valid_path)
    ranked_from = load_ranking(ranking_path)["meta"]["features"]
    if ranked_from != meta["fingerprint"]:
        raise InputError(f"{ranking_path} ranks other features than {valid_path} (fingerprint {ranked_from[:12]} vs "
                         f"{meta['fingerprint'][:12]}); re-run rerank (dvc repro -s rerank@{fold})")
    if meta.get("data_listing") != data:
        raise InputError(f"{valid_path} was made from other data than data.root holds now; "
                         f"re-run extract (dvc repro -s extract@{fold})")


if __name__ == "__main__":
    raise SystemExit(main())
