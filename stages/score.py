"""score: mAP@k and P@1 of a submission file against ground truth.

Reads   ``--submission`` (CSV: query_id,reference_ids, ids space-separated, best first) and
        ``--truth``, a directory with ``query.csv`` and ``reference.csv`` (columns id,label)
Prints  one JSON object with sorted keys to stdout: ``map@<k>``, ``p@1``, ``n_queries``
Writes  with ``--per-query OUT.csv``, each query's AP@k and P@1 (query_id,label,ap,p@1, truth
        order), e.g. for ``python -m stages.compare``
Exits   2 with one ``error: ...`` line on stderr if the submission or the truth is invalid
"""
from __future__ import annotations

import json

from retrieval.cli import parser, stage
from retrieval.metrics import MAP_K, retrieval_metrics
from retrieval.results.per_query import ranking_per_query, write_per_query
from retrieval.results.submission import read_submission, read_truth, truth_ranking


@stage
def main(argv=None) -> int:
    ap = parser(__doc__, params=False)
    ap.add_argument("--submission", required=True, help="submission CSV (query_id,reference_ids)")
    ap.add_argument("--truth", required=True, help="directory with query.csv and reference.csv (id,label)")
    ap.add_argument("--k", type=int, default=MAP_K, help=f"rank cut-off of mAP (default {MAP_K})")
    ap.add_argument("--per-query", metavar="OUT.csv", help="also write each query's AP and P@1 to this CSV")
    args = ap.parse_args(argv)
    if args.k < 1:
        ap.error("--k must be >= 1")
    rankings = read_submission(args.submission)
    query_labels, ref_labels = read_truth(args.truth)
    ranked, q_labels, r_labels = truth_ranking(rankings, query_labels, ref_labels, args.k)
    print(json.dumps(retrieval_metrics(ranked, q_labels, r_labels, args.k), sort_keys=True))
    if args.per_query:
        write_per_query(args.per_query, ranking_per_query(ranked, list(query_labels), q_labels, r_labels, args.k))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
