"""rerank: exact search (or an approximate faiss index), then the re-ranking steps params choose, for one fold.

Steps (rerank.steps, in order): DBA and alpha-QE on the vectors, then at most one of
k-reciprocal re-ranking or kNN-graph diffusion.

Reads   ``--query``, ``--reference``, ``--valid`` feature files of one fold (extract); files
        that one extract run did not make together (their fingerprints differ) are refused
Writes  ``--ranking`` (top-k references of every test query, with scores),
        ``--metrics``: validation mAP@1000 and P@1 with no re-ranking, each step alone and
        the whole chain, ``--ablation``: the same as a table (method, map@1000, p@1),
        ``--valid-ap``: each validation query's AP@1000 and P@1 under the whole chain
        (query_id,label,ap,p@1; their means are the metrics' ``final`` entry), and
        ``--valid-ranking``: the validation queries' top-k references under the whole chain,
        with scores (a ranking file, read by the report; both ranking files carry the features'
        fingerprint); the metrics hold the stage's wall time
        too (``wall``)
Params  rerank
"""
from __future__ import annotations


import numpy as np
import pandas as pd
from retrieval.cli import stage, stage_args
from retrieval.embed.feature_file import check_same_model, load_features
from retrieval.io import atomic_path, write_json
from retrieval.metrics import MAP, MAP_K, P1
from retrieval.rank.chain import rank, validation_ablation, validation_rankings
from retrieval.rank.ranking_file import ranking_meta, save_ranking
from retrieval.results.per_query import validation_per_query, write_per_query
from retrieval.timing import Clock


@stage
def main(argv=None) -> int:
    clock = Clock(__name__ == "__main__")
    args, p = stage_args(__doc__, argv, required="--query --reference --valid --ranking --metrics --ablation "
                                                 "--valid-ranking --valid-ap")
    rp = p.rerank
    query, ref, valid = (load_features(getattr(args, n)) for n in ("query", "reference", "valid"))
    for name, other in (("reference", ref), ("valid", valid)):  # one extract run's files, or refused
        check_same_model(query, other, args.query, getattr(args, name))
    made_from = ranking_meta(query.meta)
    chains = validation_rankings(valid, rp, max(rp.k, MAP_K))  # one run of each chain: scored and saved
    ablation = validation_ablation(valid, chains, MAP_K)
    final_s, final_i = chains["final"]
    write_per_query(args.valid_ap, validation_per_query(valid, final_i, MAP_K))
    q = valid.roles == "query"
    save_ranking(args.valid_ranking, valid.ids[q], valid.ids[~q], final_s[:, :rp.k], final_i[:, :rp.k], made_from)
    scores, idx = rank(query.embeddings, ref.embeddings, rp, rp.k)
    empty = np.isin(query.ids, query.meta.get("empty_queries", []))
    scores[empty], idx[empty] = -np.inf, -1  # undecodable queries rank nothing
    save_ranking(args.ranking, query.ids, ref.ids, scores, idx, made_from)
    write_json(args.metrics, clock.stamp({"valid": ablation, "fold": query.meta.get("fold")}))
    table = pd.DataFrame([{"method": name, MAP: m[MAP], P1: m[P1]} for name, m in ablation.items()])
    with atomic_path(args.ablation) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    print("rerank fold {}: ".format(query.meta.get("fold")) +
          ", ".join(f"{k} {v[MAP]:.4f}" for k, v in ablation.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
