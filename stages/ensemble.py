"""ensemble: fuse the folds' rankings into the submission, validated before it is written.

Reads   ``--rankings``, ``--rerank-metrics`` and ``--valid-ap``: path patterns whose ``{fold}`` is
        filled with each of cv.folds (rerank's ranking.npz, its metrics for the out-of-fold
        score, and its per-query validation APs); rankings of features made from other data
        (their data listings differ) or by an older version are refused
Writes  ``--submission`` (outputs/submission/submission.csv: query_id,reference_ids),
        ``--metrics``: cross-validated mAP@1000 and P@1 (validation queries of all folds pooled),
        with bootstrap 95% intervals of the mAP@1000 (over queries, and over classes: the honest
        one, since a class's queries share references) and each fold's mAP@1000 (and the stage's
        wall time, ``wall``), and
        ``--pooled-ap``: every fold's validation queries in one table (fold,query_id,label,ap,p@1)
Params  cv.folds, ensemble
"""
from __future__ import annotations



from retrieval.cli import stage, stage_args
from retrieval.io import InputError, read_json, write_json
from retrieval.metrics import MAP, N_QUERIES, P1
from retrieval.rank.fold_fusion import fuse_rankings
from retrieval.rank.ranking_file import load_rankings
from retrieval.results.bootstrap import cv_uncertainty
from retrieval.results.per_query import (AP, COLUMNS, LABEL, check_matches_metrics, pool_folds, read_per_query,
                                         write_per_query)
from retrieval.results.submission import write_submission
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv,
                         required="--rankings --rerank-metrics --valid-ap --pooled-ap --submission --metrics")
    ep = p.ensemble
    runs = load_rankings([args.rankings.format(fold=f) for f in p.cv.folds])
    if ep.fold_weights is not None and len(ep.fold_weights) != len(runs):
        raise InputError(f"ensemble.fold_weights has {len(ep.fold_weights)} weights for {len(runs)} rankings")
    qids, rids = runs[0]["query_ids"], runs[0]["reference_ids"]
    _, idx = fuse_rankings([r["scores"] for r in runs], [r["indices"] for r in runs], len(rids), ep.k,
                           ep.fold_weights)
    rankings = {q: rids[row[row >= 0]].tolist() for q, row in zip(qids.tolist(), idx)}
    write_submission(args.submission, rankings, qids.tolist(), rids.tolist(), ep.k)
    folds = [read_json(args.rerank_metrics.format(fold=f))["valid"] for f in p.cv.folds]
    cv = {variant: pooled_figures([f[variant] for f in folds]) for variant in folds[0]}
    pooled = pool_folds(_fold_tables(args.valid_ap, args.rerank_metrics, p.cv.folds, [f["final"] for f in folds]))
    write_per_query(args.pooled_ap, pooled)
    fold_maps = {str(f): m["final"][MAP] for f, m in zip(p.cv.folds, folds)}
    uncertainty = cv_uncertainty(pooled[AP].to_numpy(), pooled[LABEL].to_numpy(), fold_maps)
    summary = {**cv["final"], N_QUERIES: len(pooled), **uncertainty}
    empty = sum(1 for v in rankings.values() if not v)
    write_json(args.metrics, clock.stamp({"cv": summary, "cv_ablation": cv, "folds": len(runs), "empty_rankings": empty,
                                          "test_queries": len(qids), "test_references": len(rids)}))
    print(f"ensemble of {len(runs)} folds: {len(qids)} queries -> {args.submission}; "
          f"CV mAP@1000 {summary[MAP]:.4f} (95% interval {summary[f'{MAP}_ci95_lo']:.4f}-"
          f"{summary[f'{MAP}_ci95_hi']:.4f} over queries, {summary[f'{MAP}_class_ci95_lo']:.4f}-"
          f"{summary[f'{MAP}_class_ci95_hi']:.4f} over classes), P@1 {summary[P1]:.4f}")
    return 0


def pooled_figures(folds: list[dict]) -> dict:
    """mAP@1000 and P@1 of several folds' queries pooled: each fold's figure weighted by its queries."""
    n = sum(f[N_QUERIES] for f in folds)
    return {key: sum(f[key] * f[N_QUERIES] for f in folds) / n for key in (MAP, P1)}


def _fold_tables(ap_pattern: str, metrics_pattern: str, folds: list[int], finals: list[dict]) -> dict:
    """``{fold: per-query table}`` read from ``ap_pattern``, each checked against its fold's
    ``final`` rerank metrics (read from ``metrics_pattern``)."""
    tables = {}
    for fold, final in zip(folds, finals):
        path = ap_pattern.format(fold=fold)
        tables[fold] = read_per_query(path, COLUMNS)
        check_matches_metrics(path, tables[fold], final, metrics_pattern.format(fold=fold))
    return tables


if __name__ == "__main__":
    raise SystemExit(main())
