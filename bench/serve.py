"""Load test of the search service on loopback: latency, throughput, errors and the server's
memory, against ``python -m stages.serve`` started here in a subprocess on 127.0.0.1.

    python bench/serve.py --bundle outputs/bundle --images DIR --out bench/results/serve_NAME.json
                          [--n 1000 --concurrency 8 --single 100 --warmup 40 --k 10]

Queries: the images in ``--images`` (sorted, read into memory once), uploaded in turn as
``POST /search`` (multipart ``image``, ``k``). Steps, each after the previous one:

* ``warmup``: that many searches by ``--concurrency`` clients (not measured), so that every
  buffer a loaded server needs is made; ``rss_before_mb``: the server's resident memory then
  (``VmRSS`` of /proc/PID/status);
* ``single``: that many searches by one client, one after another: ``single_p50_ms``,
  ``single_p95_ms`` (each request's wall time at the client, upload and JSON included); after
  each, the same image searched in this process with no HTTP (``decode_image`` then
  ``Bundle.search`` on the same bundle, alternating with the requests so that both see the same
  machine): ``direct_p50_ms``, ``direct_p95_ms``, and ``http_overhead_p50_ms``, the median of
  the paired differences (what the service adds to a search);
* ``load``: ``--n`` searches by ``--concurrency`` client threads (one HTTP connection each):
  ``load_p50_ms``, ``load_p95_ms``, ``load_errors`` (a status other than 200, or no answer),
  ``searches_per_s`` (``--n`` / the wall time of the whole step); ``rss_after_mb`` and
  ``rss_growth`` = after / before - 1 (the target: within 0.10).

With ``--extract-result`` (a JSON of ``bench/extract_stage.py``, run with the same TTA on the
same machine), ``vs_extract`` compares ``searches_per_s`` with the extract stage's images per
second of each runtime: ``searches_per_image``, their plain ratio, and ``fold_embeddings_per_image``,
the same with each search counted as the bundle's F folds' embeddings of its image (the extract
stage embeds an image with one fold's model; a search, with all F): the work of a search is F
times an extracted image's, so the plain ratio cannot pass 1 / F.

The figures are those of this machine as it was: say when it was shared.

Without a trained pipeline's bundle, ``--make-bundle DATA_ROOT`` first writes one of the same
cost to ``--bundle``: the folds of ``--params`` (cv.folds), each an ImageNet-initialised,
untrained model of its ``model`` section, exported to ONNX with its TTA and online re-ranking,
over DATA_ROOT's reference images (their ids and thumbnails) with random unit vectors as their
embeddings. A search then costs what the trained bundle's would (same networks, input sizes,
gallery size and dimension); its scores mean nothing (``bundle_kind``: ``untrained``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.provenance import save_result  # noqa: E402
from retrieval.data.images import IMAGE_EXTENSIONS  # noqa: E402


def free_port() -> int:
    """A loopback TCP port free now (the OS's pick)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(bundle: Path, max_upload_mb: float = 20, launch: list[str] | None = None) -> Iterator[tuple[str, int]]:
    """``python -m stages.serve`` over ``bundle`` on a free loopback port, in a subprocess (or
    ``python *launch`` with the same flags); yields (base URL, pid) once ``/health`` answers,
    stops it after. Its log goes to a temporary file (a pipe could fill and block it)."""
    port = free_port()
    args = ["--bundle", str(bundle), "--port", str(port), "--max-upload-mb", str(max_upload_mb)]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, *(launch or ["-m", "stages.serve"]), *args], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    log.seek(0)
                    raise RuntimeError(f"the server did not start: {log.read().decode()[-2000:]}") from None
                time.sleep(0.2)
        yield url, proc.pid
    finally:
        stop(proc, 20)
        log.close()


def stop(proc: subprocess.Popen, grace: float) -> None:
    """End ``proc``: SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid``, MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def search(client: httpx.Client, name: str, data: bytes, k: int) -> tuple[float, bool]:
    """One ``POST /search``: (seconds, answered 200)."""
    start = time.perf_counter()
    try:
        ok = client.post("/search", files={"image": (name, data, "image/jpeg")}, data={"k": str(k)}).status_code == 200
    except httpx.HTTPError:
        ok = False
    return time.perf_counter() - start, ok


def run(url: str, queries: list[tuple[str, bytes]], n: int, workers: int, k: int, offset: int = 0) -> tuple[list[float], int, float]:
    """``n`` searches by ``workers`` threads: (latencies, errors, wall seconds)."""
    def work(w: int) -> list[tuple[float, bool]]:
        with httpx.Client(base_url=url, timeout=120) as client:
            return [search(client, *queries[(offset + i) % len(queries)], k) for i in range(w, n, workers)]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        done = [r for rs in pool.map(work, range(workers)) for r in rs]
    wall = time.perf_counter() - start
    return [t for t, _ in done], sum(not ok for _, ok in done), wall


def single_and_direct(url: str, bundle_path: Path, queries: list[tuple[str, bytes]], n: int, k: int,
                      offset: int) -> tuple[list[float], list[float], int]:
    """``n`` searches by one HTTP client, each followed by the same search in this process:
    (request seconds, direct seconds, request errors)."""
    from retrieval.bundle import Bundle, decode_image

    bundle = Bundle.open(bundle_path)
    http, direct, errors = [], [], 0
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(n):
            name, data = queries[(offset + i) % len(queries)]
            took, ok = search(client, name, data, k)
            http.append(took)
            errors += not ok
            start = time.perf_counter()
            bundle.search([decode_image(data, name)], k)
            direct.append(time.perf_counter() - start)
    return http, direct, errors


def percentiles(seconds: list[float], prefix: str) -> dict:
    ms = np.asarray(seconds) * 1000
    return {f"{prefix}_p50_ms": round(float(np.percentile(ms, 50)), 1),
            f"{prefix}_p95_ms": round(float(np.percentile(ms, 95)), 1)}


def read_queries(folder: Path, limit: int) -> list[tuple[str, bytes]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())[:limit]
    if not files:
        raise SystemExit(f"error: {folder}: no images")
    return [(p.name, p.read_bytes()) for p in files]


def vs_extract(extract: dict, searches_per_s: float, folds: int, source: str) -> dict:
    """``searches_per_s`` against the extract stage's images per second of each runtime (the
    module's docstring says how)."""
    rates = extract["stage_img_per_s"]
    return {"extract_result": source, "extract_stage_img_per_s": rates, "folds": folds,
            "searches_per_image": {r: round(searches_per_s / v, 3) for r, v in rates.items()},
            "fold_embeddings_per_image": {r: round(searches_per_s * folds / v, 3) for r, v in rates.items()}}


def make_bundle(params_path: Path, data_root: Path, out: Path, seed: int = 0) -> None:
    """Write the untrained bundle of the module's docstring to ``out`` (needs torch)."""
    import torch
    import yaml

    from retrieval.bundle.edit import replace_bundle
    from retrieval.bundle.export import bundle_parts
    from retrieval.config import parse_params
    from retrieval.data.images import ID, scan_test
    from retrieval.embed.feature_file import Features
    from retrieval.model.network import build_model

    raw = yaml.safe_load(params_path.read_text()) or {}
    params = parse_params({**raw, "data": {**raw.get("data", {}), "root": str(data_root)}})
    ids = scan_test(data_root, "reference")[ID]
    ex = params.extract
    meta = {"image_size": ex.image_size, "scales": ex.scales, "flip_tta": ex.flip_tta, "amp": "off", "member_weights": [1.0]}
    rng = np.random.default_rng(seed)
    folds = {}
    for fold in params.cv.folds:
        torch.manual_seed(seed + fold)
        model, model_meta = build_model(params.model, pretrained=params.model.pretrained)
        emb = rng.standard_normal((len(ids), params.model.embedding_dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        folds[fold] = ([(model.eval(), model_meta)], [None], Features(ids, emb, meta={**meta, "fold": fold}))
    replace_bundle(out, bundle_parts(params, folds))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--images", required=True, type=Path, help="folder of query images")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--single", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-queries", type=int, default=500, help="distinct query images read, at most")
    ap.add_argument("--make-bundle", type=Path, metavar="DATA_ROOT", help="first write an untrained bundle of DATA_ROOT")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="with --make-bundle: its params")
    ap.add_argument("--extract-result", type=Path, help="bench/extract_stage.py's JSON: compare with its images/s")
    args = ap.parse_args(argv)
    if args.make_bundle:
        start = time.perf_counter()
        make_bundle(args.params, args.make_bundle, args.bundle)
        print(f"bundle written to {args.bundle} in {time.perf_counter() - start:.0f} s", flush=True)
    queries = read_queries(args.images, args.max_queries)
    with serving(args.bundle) as (url, pid):
        with urllib.request.urlopen(url + "/health") as reply:
            health = json.load(reply)
        _, warm_errors, _ = run(url, queries, args.warmup, args.concurrency, args.k)
        rss_before = rss_mb(pid)
        single, direct, single_errors = single_and_direct(url, args.bundle, queries, args.single, args.k, args.warmup)
        load, load_errors, wall = run(url, queries, args.n, args.concurrency, args.k, offset=args.warmup + args.single)
        rss_after = rss_mb(pid)
    settings_file = args.bundle / "settings.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    result = {"bundle": str(args.bundle), "bundle_kind": "untrained" if args.make_bundle else "given",
              "folds": len(settings.get("folds", [])), "references": health["references"], "images": str(args.images),
              "distinct_queries": len(queries), "k": args.k, "warmup": args.warmup, "warmup_errors": warm_errors,
              "single": args.single, "single_errors": single_errors, **percentiles(single, "single"),
              **percentiles(direct, "direct"),
              "http_overhead_p50_ms": round(float(np.median(np.subtract(single, direct))) * 1000, 1),
              "n": args.n, "concurrency": args.concurrency, "load_errors": load_errors, **percentiles(load, "load"),
              "searches_per_s": round(args.n / wall, 2), "rss_before_mb": round(rss_before, 1),
              "rss_after_mb": round(rss_after, 1), "rss_growth": round(rss_after / rss_before - 1, 4),
              "tta": {k: settings.get(k) for k in ("tta_sizes", "flip_tta", "image_size", "scales") if k in settings}}
    if args.extract_result:
        result["vs_extract"] = vs_extract(json.loads(args.extract_result.read_text()), result["searches_per_s"],
                                          result["folds"], str(args.extract_result))
    save_result(args.out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
