"""compare: is experiment A better than B, query by query? A paired bootstrap over the queries
(and over their classes).

Reads   two per-query files ``A.csv`` and ``B.csv`` (columns query_id and ap at least: rerank's
        valid_ap.csv, the ensemble's pooled valid_ap.csv, or ``score --per-query``) over the
        same queries
Prints  one JSON object with sorted keys to stdout (and writes it to ``--json``): ``a``, ``b``
        (the files), ``n_queries``, ``mean_a``, ``mean_b`` (mean AP), ``mean_diff`` (A - B),
        ``diff_ci95`` (paired-bootstrap 95% interval of the mean difference), ``share_diff_positive``
        (share of resamples with A - B > 0), ``half_wins_a`` (share of random halves of the
        queries on which A's mean AP beats B's, ties counting 1/2: how often a leaderboard
        scored on half the queries would rank A first), ``resamples``, ``seed``; where both files
        have a ``label`` column, also ``n_classes``, ``class_diff_ci95`` and
        ``class_share_diff_positive``: the same bootstrap drawing whole classes (a class's queries
        share references, so its APs move together: the wider, honest interval)
Exits   2 with one ``error: ...`` line naming the file if a file lacks the columns, repeats a
        query id, or the two files' query ids (or a query's labels) differ
"""
from __future__ import annotations

import json

from retrieval.cli import parser, stage
from retrieval.io import write_json
from retrieval.results.bootstrap import RESAMPLES, SEED, paired_comparison
from retrieval.results.per_query import paired_ap


@stage
def main(argv=None) -> int:
    ap = parser(__doc__, params=False)
    ap.add_argument("a", help="per-query AP file of experiment A")
    ap.add_argument("b", help="per-query AP file of experiment B (the same query ids)")
    ap.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples and halves ({RESAMPLES})")
    ap.add_argument("--seed", type=int, default=SEED, help=f"seed of the resamples and halves ({SEED})")
    ap.add_argument("--json", metavar="OUT.json", help="also write the result to this file")
    args = ap.parse_args(argv)
    if args.resamples < 1:
        ap.error("--resamples must be >= 1")
    _, a, b, labels = paired_ap(args.a, args.b)
    result = {"a": args.a, "b": args.b, "resamples": args.resamples, "seed": args.seed,
              **paired_comparison(a, b, args.resamples, args.seed, labels)}
    print(json.dumps(result, sort_keys=True))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
