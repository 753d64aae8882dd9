"""Exact and approximate faiss indexes on a large generated gallery: build time, search time
per query, peak memory and recall@k against exact search.

    python bench/index.py --out bench/results/index_1m.json [--n-ref 1000000 --dim 512
                          --n-query 1000 --k 100 --methods exact hnsw ivfpq]

The gallery: ``n_ref`` L2-normalised vectors around ``n_ref // 25`` random centres (as in
bench/rerank.py), generated once in chunks into a temporary .npy that every child process
memory-maps. Each method runs in a fresh child (``--child METHOD``) through the pipeline's own
:func:`retrieval.rank.knn.build_index` and :func:`retrieval.rank.knn.search_index`, with the params given
here (defaults: the pipeline's ``rerank.index`` defaults, except ``nlist`` 1024 and ``nprobe``
16, so that IVF training fits a 2-core budget). Its peak resident memory is its own: read with
``os.wait4`` by bench/peak.py's small launcher, never this process's high-water mark, which a
child started straight from it would inherit as its ``ru_maxrss``. ``exact`` also writes the ground truth the others are scored on:
recall@k = |approximate top-k ∩ exact top-k| / k, averaged over the queries.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import peak  # noqa: E402
from bench.provenance import save_result  # noqa: E402
from retrieval.config import IndexParams  # noqa: E402


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2 ** 30


def make_gallery(folder: Path, n_ref: int, n_query: int, dim: int, seed: int, noise: float = 1.5) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n_ref // 25), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def items(n: int) -> np.ndarray:
        x = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, dim)).astype(np.float32) * (noise / np.sqrt(dim))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    refs = np.lib.format.open_memmap(folder / "refs.npy", mode="w+", dtype=np.float32, shape=(n_ref, dim))
    for a in range(0, n_ref, 100_000):
        refs[a:a + 100_000] = items(min(100_000, n_ref - a))
    refs.flush()
    np.save(folder / "queries.npy", items(n_query))


def run_child(method: str, folder: Path, k: int, p: IndexParams) -> dict:
    from retrieval.rank.knn import build_index, search_index

    refs = np.load(folder / "refs.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy")
    base = _peak_gb()
    start = time.perf_counter()
    index = build_index(refs, p if method != "exact" else None)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    _, idx = search_index(index, queries, k)
    search_s = time.perf_counter() - start
    out = {"build_s": round(build_s, 2), "search_ms_per_query": round(1000 * search_s / len(queries), 3),
           "base_gb": round(base, 3)}
    if method == "exact":
        np.save(folder / "truth.npy", idx)
        out["recall"] = 1.0
    else:
        truth = np.load(folder / "truth.npy")
        out["recall"] = round(float(np.mean([len(set(a[a >= 0]) & set(t)) / k for a, t in zip(idx, truth)])), 4)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    ap.add_argument("--n-ref", type=int, default=1_000_000)
    ap.add_argument("--n-query", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=["exact", "hnsw", "ivfpq"])
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--child")
    ap.add_argument("--folder")
    ap.add_argument("--params")
    args = ap.parse_args(argv)
    if args.child:
        p = IndexParams.model_validate_json(args.params)
        print(json.dumps(run_child(args.child, Path(args.folder), args.k, p)))
        return 0
    if not args.out:
        ap.error("--out is required")
    if args.methods[0] != "exact":
        ap.error("the first method must be exact (it writes the ground truth)")
    results = {"n_ref": args.n_ref, "n_query": args.n_query, "dim": args.dim, "k": args.k, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        make_gallery(Path(tmp), args.n_ref, args.n_query, args.dim, args.seed)
        print(f"gallery: {args.n_ref} x {args.dim} in {time.perf_counter() - start:.1f} s", flush=True)
        for method in args.methods:
            p = IndexParams(kind=method, nlist=args.nlist, nprobe=args.nprobe)
            results["methods"][method] = {"params": p.model_dump()} if method != "exact" else {}
            cmd = [sys.executable, __file__, "--child", method, "--folder", tmp, "--k", str(args.k),
                   "--params", p.model_dump_json()]
            proc = peak.run(cmd, capture=True)
            if proc.returncode != 0:
                raise SystemExit(f"{method} failed (exit {proc.returncode})")
            r = {**json.loads(proc.stdout.strip().splitlines()[-1]), "peak_gb": round(proc.peak_mb / 1024, 3)}
            results["methods"][method].update(r)
            print(f"{method:6s} build {r['build_s']:8.1f} s  search {r['search_ms_per_query']:8.3f} ms/query  "
                  f"peak {r['peak_gb']:.2f} GB  recall@{args.k} {r['recall']:.4f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_result(args.out, results, None if argv is None else ["bench/index.py", *argv])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
