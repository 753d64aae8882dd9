"""summary: the run in at most 15 lines, the last thing ``make repro`` prints.

Reads   every stage's metrics: ``--demo-metrics``, ``--check-metrics``, ``--split-metrics``,
        ``--train-metrics``, ``--extract-metrics`` and ``--rerank-metrics`` (patterns whose
        {fold} is filled with each of cv.folds), ``--ensemble-metrics`` and ``--report-metrics``
Names   ``--submission`` and ``--report`` (the files to open next; printed, not read)
Writes  ``--out`` (outputs/summary.txt): the cross-validated mAP@1000 with its 95% intervals,
        each fold's figure and whether its training beat epoch 0 (its pretrained start), each
        stage's wall time (folds added up), the submission's and the report's paths; printed too
Params  cv.folds, model.pretrained
"""
from __future__ import annotations

from retrieval.cli import stage, stage_args
from retrieval.io import atomic_path
from retrieval.results.summary import FOLD_STAGES, STAGES, read_stage_metrics, summary_lines


@stage
def main(argv=None) -> int:
    args, p = stage_args(__doc__, argv, required=" ".join(f"--{s}-metrics" for s in STAGES) +
                         " --submission --report --out")
    folds = p.cv.folds
    paths = {s: [getattr(args, f"{s}_metrics").format(fold=f) for f in folds] if s in FOLD_STAGES
             else [getattr(args, f"{s}_metrics")] for s in STAGES}
    lines = summary_lines(read_stage_metrics(paths), folds, p.model.pretrained, args.submission, args.report)
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
