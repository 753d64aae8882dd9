"""score: mAP@k and P@1 of a submission file against ground truth.

Reads   ``--submission`` (CSV: query_id,reference_ids, ids space-separated, best first) and
        ``--truth``, a directory with ``query.csv`` and ``reference.csv`` (columns id,label)
Prints  one JSON object with sorted keys to stdout: ``map@<k>``, ``p@1``, ``n_queries``
Exits   2 with one ``error: ...`` line on stderr if the submission or the truth is invalid
"""
from __future__ import annotations

import argparse
import json

from retrieval.cli import stage
from retrieval.submission import read_submission, read_truth, score_submission


@stage
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submission", required=True, help="submission CSV (query_id,reference_ids)")
    ap.add_argument("--truth", required=True, help="directory with query.csv and reference.csv (id,label)")
    ap.add_argument("--k", type=int, default=1000, help="rank cut-off of mAP (default 1000)")
    args = ap.parse_args(argv)
    if args.k < 1:
        ap.error("--k must be >= 1")
    rankings = read_submission(args.submission)
    query_labels, ref_labels = read_truth(args.truth)
    print(json.dumps(score_submission(rankings, query_labels, ref_labels, args.k), sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
