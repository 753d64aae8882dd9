"""Time, peak memory and mAP of search and the re-ranking methods on generated features.

What it measures, each in a fresh child process (``python bench/rerank.py --child METHOD``) so
that a method's time and peak RSS are its own and not inflated by an earlier one:

* ``matmul_floor_s``: the fair floor of any exact search: the product ``queries @ references.T``
  (float32, numpy/BLAS) computed in blocks of ``--floor-block`` queries into one preallocated
  buffer that every block reuses (no page faults of a fresh 2.6 GB result), with as many BLAS
  threads as exact search has workers (the usable cores: ``threads``); one warm-up pass, then the best of
  ``--floor-repeats`` (5) passes (``matmul_floor_runs_s``: every pass);
* ``search_s``: :func:`retrieval.rank.knn.knn` with ``k`` (default rerank.k) as the pipeline runs
  it (the product and the sorted lists included), timed like the floor: one warm-up call, then
  the best of ``--floor-repeats`` calls (``search_runs_s``: every call); and
  ``search_vs_floor = search_s / matmul_floor_s``;
* ``qe_dba_s``: :func:`retrieval.rank.expansion.dba` on the references, then
  :func:`retrieval.rank.expansion.alpha_qe` on the queries, then the search;
* ``kreciprocal_s``: :func:`retrieval.rank.kreciprocal.k_reciprocal` (top_k=k);
* ``diffusion_s``: :func:`retrieval.rank.diffusion.diffusion` (20 CG iterations at most, top_k=k).

Every method runs with the pipeline's default params (``retrieval.config.RerankParams()``:
the values in params.yaml), so the figures are those of what ``dvc repro`` runs.

For every method: ``<method>_peak_gb`` is the child's own peak resident memory, read by a small
launcher with ``os.wait4`` (bench/peak.py: a child started straight from this process would
inherit this process's high-water mark, about 0.44 GB at the full size, as its ``ru_maxrss``);
it includes the interpreter, the libraries and the loaded features; ``<method>_base_gb`` is the
child's ``getrusage(RUSAGE_SELF).ru_maxrss`` right after loading, before the method ran. ``<method>_map`` is mAP@k of the
method's ranking against the generated labels (:func:`retrieval.metrics.retrieval_metrics`).
Times are wall-clock seconds of the method call alone (imports and loading excluded).

The features: ``n_ref // 25`` class centres drawn uniformly on the unit sphere in ``dim``
dimensions; references are assigned round-robin to the classes (25 per class), queries to
random classes; each item is ``normalise(centre + noise)`` with Gaussian noise of total norm
about ``noise`` (default 2.2, giving an expected within-class cosine near 0.17, low enough
that the plain search is far from perfect). They are generated once, saved to temporary
.npy files and memory-mapped by every child (which copies its queries and references out).

Usage: ``python bench/rerank.py --out FILE [--n-query 18027 --n-ref 36748 --dim 512
--seed 0 --k 1000 --floor-block 1024 --floor-repeats 5]``; prints a table and writes FILE as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import peak  # noqa: E402  (after the sys.path set-up)
from bench.provenance import save_result  # noqa: E402
from retrieval.config import RerankParams  # noqa: E402
from retrieval.resources import usable_cores  # noqa: E402

P = RerankParams()  # the pipeline's default re-ranking params

METHODS = ("floor", "search", "qe_dba", "kreciprocal", "diffusion")
TIME_KEY = {"floor": "matmul_floor_s", "search": "search_s", "qe_dba": "qe_dba_s",
            "kreciprocal": "kreciprocal_s", "diffusion": "diffusion_s"}


def make_features(n_query: int, n_ref: int, dim: int, seed: int, noise: float):
    """Unit-norm float32 (queries, references) and int labels with ~25 references per class."""
    rng = np.random.default_rng(seed)
    n_classes = max(1, n_ref // 25)
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ref_labels = np.arange(n_ref) % n_classes
    query_labels = rng.integers(0, n_classes, n_query)

    def items(labels):
        x = centres[labels] + rng.standard_normal((len(labels), dim)).astype(np.float32) * (noise / np.sqrt(dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return items(query_labels), items(ref_labels), query_labels, ref_labels


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2 ** 30  # KiB on Linux


def matmul_floor(queries: np.ndarray, references: np.ndarray, block: int, repeats: int, threads: int) -> list[float]:
    """Seconds of each of ``repeats`` passes of ``queries @ references.T``, block by block into one
    reused buffer, with ``threads`` BLAS threads, after a warm-up pass."""
    buf = np.empty((min(block, len(queries)), len(references)), np.float32)
    refs_t = references.T
    times = []
    with threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            for a in range(0, len(queries), block):
                q = queries[a:a + block]
                np.matmul(q, refs_t, out=buf[:len(q)])
            times.append(time.perf_counter() - t0)
    return times[1:]


def _search_runs(queries: np.ndarray, references: np.ndarray, k: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of :func:`retrieval.rank.knn.knn`, after a warm-up call."""
    from retrieval.rank.knn import knn
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        knn(queries, references, k)
        times.append(time.perf_counter() - t0)
    return times[1:]


def run_child(method: str, features: str, k: int, block: int = 1024, repeats: int = 5) -> dict:
    """Load the features, run one method, return its time, base memory and mAP."""
    x = np.load(os.path.join(features, "x.npy"), mmap_mode="r")
    labels = np.load(os.path.join(features, "labels.npy"))
    n_query = int(np.load(os.path.join(features, "n_query.npy")))
    queries, references = np.array(x[:n_query]), np.array(x[n_query:])
    query_labels, ref_labels = labels[:n_query], labels[n_query:]
    del x
    from retrieval.metrics import map_key, retrieval_metrics
    from retrieval.rank.knn import knn
    base = _peak_gb()
    ranked, extra = None, {"threads": usable_cores()}  # exact search's workers (retrieval.rank.knn.exact_knn)
    t0 = time.perf_counter()
    if method == "floor":
        extra["runs_s"] = matmul_floor(queries, references, block, repeats, extra["threads"])
        elapsed = min(extra["runs_s"])
    elif method == "search":
        extra["runs_s"] = _search_runs(queries, references, k, repeats)
        elapsed = min(extra["runs_s"])
        _, ranked = knn(queries, references, k)
    elif method == "qe_dba":
        from retrieval.rank.expansion import alpha_qe, dba
        refs2 = dba(references, P.dba.k, P.dba.alpha)
        q2 = alpha_qe(queries, refs2, P.qe.k, P.qe.alpha)
        _, ranked = knn(q2, refs2, k)
        elapsed = time.perf_counter() - t0
    elif method == "kreciprocal":
        from retrieval.rank.kreciprocal import k_reciprocal
        _, ranked = k_reciprocal(queries, references, P.kreciprocal, top_k=k)
        elapsed = time.perf_counter() - t0
    elif method == "diffusion":
        from retrieval.rank.diffusion import diffusion
        _, ranked = diffusion(queries, references, P.diffusion, top_k=k)
        elapsed = time.perf_counter() - t0
    else:
        raise ValueError(f"unknown method {method!r}")
    out = {"seconds": elapsed, "base_gb": base, **extra}
    if ranked is not None:
        out["map"] = retrieval_metrics(ranked, query_labels, ref_labels, k)[map_key(k)]
    return out


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="JSON file to write (required unless --child)")
    ap.add_argument("--n-query", type=int, default=18027)
    ap.add_argument("--n-ref", type=int, default=36748)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=P.k, help=f"ranked references per query (rerank.k: {P.k})")
    ap.add_argument("--noise", type=float, default=2.2)
    ap.add_argument("--floor-block", type=int, default=1024, help="queries a block of the floor's product (1024)")
    ap.add_argument("--floor-repeats", type=int, default=5, help="timed passes of the floor and of the search, after a warm-up (5)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--features", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args.child, args.features, args.k, args.floor_block, args.floor_repeats)))
        return None
    if not args.out:
        ap.error("--out is required")
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}")

    q, g, ql, gl = make_features(args.n_query, args.n_ref, args.dim, args.seed, args.noise)
    result = {"n_query": args.n_query, "n_ref": args.n_ref, "dim": args.dim, "seed": args.seed,
              "k": args.k, "noise": args.noise, "cores": os.cpu_count(),
              "cores_usable": usable_cores()}
    with tempfile.TemporaryDirectory() as tmp:
        path = tmp  # x.npy (memory-mapped by the children), labels.npy, n_query.npy
        np.save(os.path.join(tmp, "x.npy"), np.concatenate([q, g]))
        np.save(os.path.join(tmp, "labels.npy"), np.concatenate([ql, gl]))
        np.save(os.path.join(tmp, "n_query.npy"), np.int64(len(q)))
        del q, g
        for method in methods:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--features", path,
                   "--k", str(args.k), "--floor-block", str(args.floor_block), "--floor-repeats", str(args.floor_repeats)]
            proc = peak.run(cmd, capture=True)
            if proc.returncode != 0:
                raise SystemExit(f"{method} failed (exit {proc.returncode})")
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            name = "matmul_floor" if method == "floor" else method
            result[TIME_KEY[method]] = child["seconds"]
            result[f"{name}_peak_gb"] = proc.peak_mb / 1024
            result[f"{name}_base_gb"] = child["base_gb"]
            result["threads"] = child["threads"]
            if "map" in child:
                result[f"{name}_map"] = child["map"]
            if "runs_s" in child:
                result[f"{name}_runs_s"] = child["runs_s"]
    if "search_s" in result and "matmul_floor_s" in result:
        result["search_vs_floor"] = result["search_s"] / result["matmul_floor_s"]

    print(f"Q={args.n_query} G={args.n_ref} d={args.dim} k={args.k} cores={result['cores']} "
          f"threads={result.get('threads')}")
    print(f"{'method':<14}{'seconds':>10}{'peak GB':>10}{'base GB':>10}{'mAP@' + str(args.k):>12}")
    for method in methods:
        name = "matmul_floor" if method == "floor" else method
        m = result.get(f"{name}_map")
        print(f"{name:<14}{result[TIME_KEY[method]]:>10.3f}{result[name + '_peak_gb']:>10.3f}"
              f"{result[name + '_base_gb']:>10.3f}{'' if m is None else f'{m:.4f}':>12}")
    if "search_vs_floor" in result:
        print(f"search_vs_floor = {result['search_vs_floor']:.2f}")
    save_result(args.out, result, None if argv is None else ["bench/rerank.py", *argv])
    return result


if __name__ == "__main__":
    main()
