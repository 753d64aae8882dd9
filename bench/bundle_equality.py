"""Does the bundle search as the pipeline ranks? Embeddings and top-10 on a run's test queries.

    python bench/bundle_equality.py --run /work/runs/grocery --folds 0 1 2 --out bench/results/bundle_equality_grocery.json
        [--fp32-queries 50] [--top 10] [--params P] [--models PATTERN] [--extract PATTERN]

Builds a bundle from the run's outputs (outputs/train/fold{f}/model.pt, outputs/extract/fold{f}/
reference.npz and whitening.npz, params.yaml), then, on every test query image of the run's
data.root:

- the bundle's embedding (ONNX Runtime, numpy preprocessing) against the run's query features
  (torch, with the run's extract.amp: bf16 on a CPU with AVX-512 BF16 under ``auto``), and on the
  first ``--fp32-queries`` against torch fp32 (amp off): smallest and mean cosine;
- the bundle's top ``--top`` against the pipeline's ranking with the same online steps: each
  fold's :func:`retrieval.rank.chain.rank` with steps [dba, qe] (those of rerank.steps) on the
  run's query features, the folds fused as the ensemble fuses them: the share of queries whose
  top ``--top`` ids are the same, in the same order (and as sets); and the same share with the
  first ``--fp32-queries`` queries embedded by torch in fp32 (the references as the run made them).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import save_result  # noqa: E402
from retrieval.bundle import Bundle, decode_image  # noqa: E402
from retrieval.bundle.edit import replace_bundle  # noqa: E402
from retrieval.bundle.export import bundle_parts  # noqa: E402
from retrieval.config import load_params  # noqa: E402
from retrieval.data.images import IMAGE, scan_test  # noqa: E402
from retrieval.embed.feature_file import load_features  # noqa: E402
from retrieval.embed.members import embed_members  # noqa: E402
from retrieval.embed.tta import embed_tta  # noqa: E402
from retrieval.embed.whitening import load_whitening  # noqa: E402
from retrieval.model.checkpoints import models_from_checkpoint  # noqa: E402
from retrieval.rank.fold_fusion import fuse_rankings  # noqa: E402
from retrieval.rank.chain import rank  # noqa: E402
from retrieval.resources import set_threads  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a pipeline checkout whose outputs/ are complete")
    ap.add_argument("--params", help="default: RUN/params.yaml")
    ap.add_argument("--models", default="outputs/train/fold{fold}/model.pt", help="under RUN, with {fold}")
    ap.add_argument("--extract", default="outputs/extract/fold{fold}/{name}.npz",
                    help="under RUN, with {fold} and {name} (reference, query, whitening)")
    ap.add_argument("--folds", type=int, nargs="+", required=True)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--fp32-queries", type=int, default=50)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    set_threads(0)
    run = Path(args.run)
    p = load_params(args.params or run / "params.yaml")
    p = p.model_copy(update={"cv": p.cv.model_copy(update={"folds": args.folds})})
    x = lambda f, name: run / args.extract.format(fold=f, name=name)  # noqa: E731
    folds = {f: (models_from_checkpoint(run / args.models.format(fold=f)), load_whitening(x(f, "whitening")),
                 load_features(x(f, "reference"))) for f in args.folds}
    queries = {f: load_features(x(f, "query")) for f in args.folds}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        replace_bundle(Path(tmp) / "bundle", bundle_parts(p, folds))
        built = time.perf_counter() - start
        bundle = Bundle.open(Path(tmp) / "bundle")
        table = scan_test(p.data.root, "query")
        assert table["id"].tolist() == queries[args.folds[0]].ids.tolist()
        images = [decode_image((Path(p.data.root) / i).read_bytes(), i) for i in table[IMAGE]]
        start = time.perf_counter()
        got = bundle.embed(images)
        hits = bundle.search_embedded(got, args.top)
        searched = time.perf_counter() - start
    out = {"run": str(run), "folds": args.folds, "queries": len(images), "references": len(bundle.ids),
           "steps": bundle.settings["rerank"]["steps"], "left_out": bundle.settings["rerank"]["offline_steps_left_out"],
           "extract_amp": p.extract.amp, "bundle_build_s": round(built, 1), "bundle_embed_and_search_s": round(searched, 1)}
    cos = np.concatenate([(got[f] * queries[f].embeddings).sum(1) for f in args.folds])
    out["cosine_vs_pipeline_features"] = {"min": float(cos.min()), "mean": float(cos.mean()),
                                          "share_ge_0.9999": float((cos >= 0.9999).mean())}
    n = min(args.fp32_queries, len(images))
    fp32, fp32_emb = [], {}
    for f, (models, whitenings, refs) in folds.items():
        m = refs.meta
        emb = embed_members(models, whitenings, m.get("member_weights", [1.0] * len(models)), lambda mm: embed_tta(
            mm[0], mm[1], p.data.root, table[IMAGE][:n].tolist(), m["image_size"], m.get("scales", [1.0]),
            m["flip_tta"], 32, 0, amp="off", runtime="torch")[0])
        fp32.append((got[f][:n] * emb).sum(1))
        fp32_emb[f] = emb
    fp32 = np.concatenate(fp32)
    out["cosine_vs_torch_fp32_first_queries"] = {"queries": n, "min": float(fp32.min()), "mean": float(fp32.mean())}
    rp = p.rerank.model_copy(update={"steps": bundle.settings["rerank"]["steps"]})
    runs = [rank(queries[f].embeddings, folds[f][2].embeddings, rp, rp.k) for f in args.folds]
    weights = [f["weight"] for f in bundle.settings["folds"]]
    _, idx = fuse_rankings([s for s, _ in runs], [i for _, i in runs], len(bundle.ids), args.top, weights)
    ids = folds[args.folds[0]][2].ids
    want = [ids[row[row >= 0]].tolist() for row in idx]
    mine = [[r for r, _ in row] for row in hits]
    out[f"top{args.top}_equal_share"] = float(np.mean([a == b for a, b in zip(mine, want)]))
    # the same with the first n queries embedded by torch in fp32 (what the bundle computes in ONNX)
    runs32 = [rank(fp32_emb[f], folds[f][2].embeddings, rp, rp.k) for f in args.folds]
    _, idx32 = fuse_rankings([s for s, _ in runs32], [i for _, i in runs32], len(bundle.ids), args.top, weights)
    out[f"top{args.top}_equal_share_vs_fp32_queries"] = float(np.mean(
        [a == ids[row[row >= 0]].tolist() for a, row in zip(mine[:n], idx32)]))
    out[f"top{args.top}_same_set_share"] = float(np.mean([set(a) == set(b) for a, b in zip(mine, want)]))
    out["top1_equal_share"] = float(np.mean([a[:1] == b[:1] for a, b in zip(mine, want)]))
    print(out)
    save_result(args.out, out, None if argv is None else ["bench/bundle_equality.py", *argv])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
