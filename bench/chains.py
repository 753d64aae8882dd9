"""Re-ranking chains compared on a finished run's features: validation and test, paired.

For every variant (a name and ``KEY=VALUE`` overrides of the run's params.yaml), runs the run's
own ``stages.rerank`` on each fold's saved features, ``stages.ensemble`` and ``stages.score``
(against ``--truth``: the benchmark reads the truth, no stage does), then ``stages.compare``
against the first variant (the baseline): the pooled validation queries of all folds and the
test queries, for AP@1000 and for P@1, with the classes resampled. The stages run in the run's
checkout (``--run``, a ``bench/pipeline.py`` work folder), so the code is the run's own.

    python bench/chains.py --run /work/runs/grocery --truth ../shared/data/grocery/truth \\
        --out bench/results/chains_grocery.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.provenance import save_result  # noqa: E402  (after the sys.path set-up)
from bench.scale import dotted, merged  # noqa: E402

VARIANTS = {  # name -> overrides; the first is the baseline every other is compared with
    "default": [],
    "none": ["rerank.steps=[]"],
    "dba": ["rerank.steps=[dba]"],
    "dba_qe": ["rerank.steps=[dba, qe]"],
    "diffusion": ["rerank.steps=[diffusion]"],
    "dba_diffusion": ["rerank.steps=[dba, diffusion]"],
    "qe_diffusion": ["rerank.steps=[qe, diffusion]"],
    "kreciprocal": ["rerank.steps=[kreciprocal]"],
    "dba_qe_kreciprocal": ["rerank.steps=[dba, qe, kreciprocal]"],
}


EXTRACT = "@extract="  # a variant's own feature folder (e.g. bench/gallery_whitening.py's), not a params key


def _stage(run: Path, name: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", f"stages.{name}", *args], cwd=run, capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(f"stages.{name} failed in {run}: {out.stderr.strip()[-2000:]}")
    return out.stdout


def _rerank(run: Path, extract: Path, folder: Path, params: Path, folds: list[int]) -> None:
    for f in folds:
        x, o = extract / f"fold{f}", folder / f"fold{f}"
        o.mkdir(parents=True, exist_ok=True)
        _stage(run, "rerank", "--params", str(params), "--query", f"{x}/query.npz", "--reference",
               f"{x}/reference.npz", "--valid", f"{x}/valid.npz", "--ranking", f"{o}/ranking.npz",
               "--metrics", f"{o}/metrics.json", "--ablation", f"{o}/ablation.csv", "--valid-ap",
               f"{o}/valid_ap.csv", "--valid-ranking", f"{o}/valid_ranking.npz")


def _variant(run: Path, extract: Path, work: Path, name: str, overrides: list[str], truth: Path) -> dict:
    """Run one variant into ``work/name``; its figures."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    extract = Path(next((o[len(EXTRACT):] for o in overrides if o.startswith(EXTRACT)), extract))
    overrides = [o for o in overrides if not o.startswith(EXTRACT)]
    params = merged(yaml.safe_load((run / "params.yaml").read_text()), dotted(overrides))
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _rerank(run, extract, folder, folder / "params.yaml", params["cv"]["folds"])
    _stage(run, "ensemble", "--params", str(folder / "params.yaml"),
           "--rankings", f"{folder}/fold{{fold}}/ranking.npz", "--rerank-metrics", f"{folder}/fold{{fold}}/metrics.json",
           "--valid-ap", f"{folder}/fold{{fold}}/valid_ap.csv", "--submission", f"{folder}/submission.csv",
           "--metrics", f"{folder}/ensemble.json", "--pooled-ap", f"{folder}/valid_ap.csv")
    test = json.loads(_stage(run, "score", "--submission", f"{folder}/submission.csv", "--truth", str(truth),
                             "--per-query", f"{folder}/test_ap.csv"))
    cv = json.loads((folder / "ensemble.json").read_text())["cv"]
    return {"overrides": overrides, "extract": str(extract), "valid_map": cv["map@1000"], "valid_p1": cv["p@1"],
            "test_map": test["map@1000"], "test_p1": test["p@1"]}


def _as_ap(src: Path, column: str, dst: Path) -> Path:
    """A per-query file whose ``ap`` column is ``column`` (P@1 through stages.compare)."""
    table = pd.read_csv(src, dtype={"query_id": str, "label": str})
    table["ap"] = table[column]
    table[["query_id", "label", "ap"]].to_csv(dst, index=False)
    return dst


def _compare(run: Path, a: Path, b: Path) -> dict:
    out = json.loads(_stage(run, "compare", str(a), str(b)))
    keep = ("mean_a", "mean_b", "mean_diff", "diff_ci95", "class_diff_ci95", "n_queries", "n_classes")
    return {k: out[k] for k in keep if k in out}


def _comparisons(run: Path, work: Path, name: str, base: str) -> dict:
    result = {}
    for split in ("valid", "test"):
        a, b = work / name / f"{split}_ap.csv", work / base / f"{split}_ap.csv"
        result[f"{split}_map"] = _compare(run, a, b)
        result[f"{split}_p1"] = _compare(run, _as_ap(a, "p@1", work / name / f"{split}_p1.csv"),
                                         _as_ap(b, "p@1", work / base / f"{split}_p1.csv"))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished bench/pipeline.py work folder (its features are read)")
    ap.add_argument("--truth", required=True, help="the data set's truth/ folder (query.csv, reference.csv)")
    ap.add_argument("--work", help="scratch folder for the variants (default: RUN/chains)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[;KEY=VALUE]",
                    help="a variant to add (repeatable); @extract=FOLDER: its own feature files")
    ap.add_argument("--extract", help="the feature files' folder, fold<i>/*.npz (default: RUN/outputs/extract)")
    ap.add_argument("--only", action="store_true", help="only the --variant ones, the first the baseline")
    ap.add_argument("--out", required=True, help="the JSON to write")
    args = ap.parse_args(argv)
    run, truth = Path(args.run).resolve(), Path(args.truth).resolve()
    extract = Path(args.extract).resolve() if args.extract else run / "outputs/extract"
    work = Path(args.work).resolve() if args.work else run / "chains"
    variants = {} if args.only else dict(VARIANTS)
    for v in args.variant:
        name, _, sets = v.partition(":")
        variants[name] = [s for s in sets.split(";") if s]
    base = next(iter(variants))
    figures = {name: _variant(run, extract, work, name, sets, truth) for name, sets in variants.items()}
    for name in variants:
        if name != base:
            figures[name]["vs_" + base] = _comparisons(run, work, name, base)
        print(name, {k: figures[name][k] for k in ("valid_map", "valid_p1", "test_map", "test_p1")}, flush=True)
    save_result(args.out, {"run": str(run), "extract": str(extract), "baseline": base, "variants": figures}, repo=run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
