"""Every stage's ``main`` on tiny generated data, chained as dvc.yaml chains them, then scored.

Further tests run real ``dvc repro`` in a scratch copy of the repository and check the
caching contract (a second repro does nothing, a ``rerank`` param reruns only check, rerank,
ensemble and report) and that a params mistake stops the pipeline before any output is removed.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from retrieval.embed.feature_file import load_features
from retrieval.results.per_query import AP, COLUMNS, FOLD, P1, QUERY_ID, read_per_query
from retrieval.results.submission import read_submission

ROOT = Path(__file__).resolve().parents[1]
TINY_REPORT_VALID = 5



@pytest.fixture(scope="module")
def tiny(tiny_params):
    return tiny_params({
        "seed": 7,
        # two scales and whitening: the search command below must repeat both to match the submission;
        # whiten_dim 16 exceeds what 12 training images give (rank 11): it is reduced to 11
        "extract": {"scales": [1.0, 1.5], "whiten_dim": 16},
        "report": {"n_valid": TINY_REPORT_VALID, "n_test": 3},
    })


# every stage's metrics before the report's: what the report's charts and the summary read
RUN_FLAGS = ("--demo-metrics", "metrics/demo.json", "--check-metrics", "check/metrics.json", "--split-metrics",
             "split/metrics.json", "--train-metrics", "train/fold{fold}/metrics.json", "--extract-metrics",
             "extract/fold{fold}/metrics.json", "--rerank-metrics", "rerank/fold{fold}/metrics.json",
             "--ensemble-metrics", "ensemble/metrics.json")


def run_stage(module: str, *args: str) -> None:
    mod = __import__(f"stages.{module}", fromlist=["main"])
    assert mod.main(list(args)) == 0, module


# the second case: two backbones per fold, their embeddings fused with weights chosen on validation
@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]],
                         ids=["one-backbone", "two-backbones"])
def test_stages_chain_to_a_valid_scored_submission(tmp_path, monkeypatch, capsys, backbone, tiny, tiny_params):
    monkeypatch.chdir(tmp_path)
    n_members = 1 if isinstance(backbone, str) else len(backbone)
    Path("params.yaml").write_text(yaml.safe_dump(tiny_params({"model": {"backbone": backbone}}, tiny)))
    run_stage("demo", "--out", "data", "--metrics", "metrics/demo.json")
    run_stage("check", "--out", "check/passed.txt", "--metrics", "check/metrics.json")
    run_stage("split", "--out", "split/folds.csv", "--metrics", "split/metrics.json")
    folds = pd.read_csv("split/folds.csv")
    assert sorted(folds["fold"].unique()) == [0, 1] and len(folds) == 24
    for f in (0, 1):
        run_stage("train", "--fold", str(f), "--folds", "split/folds.csv", "--model", f"train/fold{f}/model.pt",
                  "--history", f"train/fold{f}/history.csv", "--metrics", f"train/fold{f}/metrics.json")
        hist = pd.read_csv(f"train/fold{f}/history.csv")
        assert hist["epoch"].tolist() == [0, 1] and hist["val_map@1000"].between(0, 1).all()
        run_stage("extract", "--fold", str(f), "--model", f"train/fold{f}/model.pt", "--folds", "split/folds.csv",
                  "--query", f"extract/fold{f}/query.npz", "--reference", f"extract/fold{f}/reference.npz",
                  "--valid", f"extract/fold{f}/valid.npz", "--whitening", f"extract/fold{f}/whitening.npz",
                  "--metrics", f"extract/fold{f}/metrics.json")
        valid = load_features(f"extract/fold{f}/valid.npz")
        assert set(valid.roles) == {"query", "reference"}
        n_train = int((folds["fold"] != f).sum())
        assert valid.embeddings.shape[1] == n_members * min(16, n_train - 1)
        assert [m["dim"] for m in valid.meta["members"]] == [min(16, n_train - 1)] * n_members
        assert len(valid.meta["member_weights"]) == n_members and sum(valid.meta["member_weights"]) == pytest.approx(1)
        if n_members > 1:
            em = json.loads(Path(f"extract/fold{f}/metrics.json").read_text())
            assert len(em["member_weight_candidates"]) == 11 and list(em["member_weights"]) == backbone
        assert set(valid.ids) == set(folds.loc[folds["fold"] == f, "id"].astype(str))
        run_stage("rerank", "--query", f"extract/fold{f}/query.npz", "--reference", f"extract/fold{f}/reference.npz",
                  "--valid", f"extract/fold{f}/valid.npz", "--ranking", f"rerank/fold{f}/ranking.npz",
                  "--metrics", f"rerank/fold{f}/metrics.json", "--ablation", f"rerank/fold{f}/ablation.csv",
                  "--valid-ap", f"rerank/fold{f}/valid_ap.csv", "--valid-ranking", f"rerank/fold{f}/valid_ranking.npz")
        m = json.loads(Path(f"rerank/fold{f}/metrics.json").read_text())
        # each validation query's AP and P@1 under the final chain average exactly to its metrics
        per_query = read_per_query(f"rerank/fold{f}/valid_ap.csv", COLUMNS)
        assert per_query[QUERY_ID].tolist() == valid.ids[valid.roles == "query"].tolist()
        assert np.mean(per_query[AP].to_numpy()) == m["valid"]["final"]["map@1000"]
        assert np.mean(per_query[P1].to_numpy()) == m["valid"]["final"]["p@1"]
        assert set(m["valid"]) == {"none", "dba", "qe", "diffusion", "final"}
        table = pd.read_csv(f"rerank/fold{f}/ablation.csv")
        assert table["method"].tolist() == ["none", "dba", "qe", "diffusion", "final"]  # the chain's order
        assert dict(zip(table["method"], table["map@1000"])) == \
            pytest.approx({k: v["map@1000"] for k, v in m["valid"].items()}, abs=1e-6)
    run_stage("ensemble", "--rankings", "rerank/fold{fold}/ranking.npz", "--rerank-metrics",
              "rerank/fold{fold}/metrics.json", "--valid-ap", "rerank/fold{fold}/valid_ap.csv",
              "--submission", "submission/submission.csv", "--metrics", "ensemble/metrics.json",
              "--pooled-ap", "ensemble/valid_ap.csv")
    run_stage("report", "--valid", "extract/fold{fold}/valid.npz", "--valid-ranking", "rerank/fold{fold}/valid_ranking.npz",
              "--folds", "split/folds.csv",
              "--submission", "submission/submission.csv", "--out", "report", "--metrics", "metrics/report.json",
              *RUN_FLAGS, "--history", "train/fold{fold}/history.csv", "--ablation", "rerank/fold{fold}/ablation.csv")
    run_stage("summary", *RUN_FLAGS, "--report-metrics", "metrics/report.json", "--submission",
              "submission/submission.csv", "--report", "report/index.html", "--out", "summary.txt")
    summary = Path("summary.txt").read_text().splitlines()
    assert len(summary) <= 15 and summary[0].startswith("validation mAP@1000  ")
    assert "submission  submission/submission.csv (6 test queries)" in summary and capsys.readouterr().out.endswith(
        Path("summary.txt").read_text())  # printed last
    assert_wall_times(["metrics/demo.json", "check/metrics.json", "split/metrics.json", "ensemble/metrics.json",
                       "metrics/report.json"] + [f"{s}/fold{f}/metrics.json" for s in ("train", "extract", "rerank")
                                                 for f in (0, 1)],
                      with_images=["metrics/demo.json", "split/metrics.json", "train/fold0/metrics.json",
                                   "extract/fold1/metrics.json"])
    page = Path("report/index.html").read_text()
    # the run: each fold's validation curve and re-ranking ablation, and the stages' wall times
    assert page.count("validation mAP@1000 by epoch</text>") == page.count("re-ranking, validation mAP@1000</text>") == 2
    assert "wall time of each stage" in page
    n_valid_queries = int((folds["role"] == "query").sum())
    shown = min(TINY_REPORT_VALID, n_valid_queries)
    # every validation row shows its query and its top references (all 6 of a fold's, at most 10)
    assert page.count("class='cell q'") == shown + 3  # + the 3 sampled test queries
    assert page.count("Hardest classes") == 1 and "Most confused pairs" in page
    assert Image.open("report/grid.png").size[1] == shown * (96 + 8)
    sub = read_submission("submission/submission.csv")
    queries = pd.read_csv("data/truth/query.csv", dtype=str)
    refs = pd.read_csv("data/truth/reference.csv", dtype=str)
    assert list(sub) == sorted(queries["id"])  # every query, in file-name order
    assert all(len(v) == len(set(v)) == len(refs) for v in sub.values())  # all 6 refs, unique
    cv = json.loads(Path("ensemble/metrics.json").read_text())["cv"]
    assert 0 < cv["map@1000"] <= 1
    # the pooled per-query file: both folds' validation queries; its mean is the CV figure, which
    # the bootstrap interval brackets; each fold's own mAP and their spread
    pooled = read_per_query("ensemble/valid_ap.csv", (FOLD, *COLUMNS))
    assert sorted(pooled[QUERY_ID]) == sorted(folds.loc[folds["role"] == "query", "id"].astype(str))
    assert cv["n_queries"] == len(pooled) and np.mean(pooled[AP].to_numpy()) == pytest.approx(cv["map@1000"], abs=1e-12)
    assert cv["map@1000_ci95_lo"] <= cv["map@1000"] <= cv["map@1000_ci95_hi"]
    assert cv["map@1000_class_ci95_lo"] <= cv["map@1000"] <= cv["map@1000_class_ci95_hi"]
    fold_maps = {str(f): pooled.loc[pooled[FOLD] == str(f), AP].mean() for f in (0, 1)}
    assert cv["fold_map@1000"] == pytest.approx(fold_maps, abs=1e-12)
    assert cv["fold_map@1000_range"] == pytest.approx(abs(fold_maps["0"] - fold_maps["1"]), abs=1e-12)
    capsys.readouterr()
    from stages import score
    assert score.main(["--submission", "submission/submission.csv", "--truth", "data/truth"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["n_queries"] == 6 and 0 < scored["map@1000"] <= 1

    # the search command, on the test queries, reproduces the submission's rankings
    from stages import search
    assert search.main(["data/test/query", "--top", "6", "--json", "--models", "train/fold{fold}/model.pt",
                        "--references", "extract/fold{fold}/reference.npz",
                        "--whitening", "extract/fold{fold}/whitening.npz"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found) == 6
    for path, hits in found.items():
        assert [h["id"] for h in hits] == sub[Path(path).stem], path


def naive_ap(ranked: list[str], relevant: set[str], k: int = 1000) -> float:
    """AP@k worked out the long way: precision at each hit, summed, over min(relevant, k)."""
    hits, total = 0, 0.0
    for rank, ref in enumerate(ranked[:k], start=1):
        if ref in relevant:
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k) if relevant else 0.0


def test_plain_search_is_a_cosine_ranking_and_score_is_a_naive_ap_loop(tmp_path, monkeypatch, capsys, tiny,
                                                                         tiny_params):
    """One fold and no re-ranking: the submission is each query's references by cosine similarity of
    the saved features (ties within 1e-6 in any order), and stages.score's mAP@1000 and P@1 are
    those of a plain loop over the truth files."""
    monkeypatch.chdir(tmp_path)
    over = {"cv": {"folds": [0]}, "rerank": {"steps": []},
            "demo": {"n_test_classes": 4, "queries_per_class": 3, "photos_per_ref_class": 3}}
    Path("params.yaml").write_text(yaml.safe_dump(tiny_params(over, tiny)))
    run_stage("demo", "--out", "data")
    run_stage("split", "--out", "folds.csv", "--metrics", "split.json")
    run_stage("train", "--fold", "0", "--folds", "folds.csv", "--model", "model.pt", "--history", "history.csv",
              "--metrics", "train.json")
    run_stage("extract", "--fold", "0", "--model", "model.pt", "--folds", "folds.csv", "--query", "fold0/query.npz",
              "--reference", "fold0/reference.npz", "--valid", "fold0/valid.npz", "--whitening", "fold0/whitening.npz",
              "--metrics", "extract.json")
    run_stage("rerank", "--query", "fold0/query.npz", "--reference", "fold0/reference.npz", "--valid",
              "fold0/valid.npz", "--ranking", "fold0/ranking.npz", "--metrics", "fold0/metrics.json", "--ablation",
              "ablation.csv", "--valid-ap", "fold0/valid_ap.csv", "--valid-ranking", "valid_ranking.npz")
    run_stage("ensemble", "--rankings", "fold{fold}/ranking.npz", "--rerank-metrics", "fold{fold}/metrics.json",
              "--valid-ap", "fold{fold}/valid_ap.csv", "--submission", "submission.csv", "--metrics", "ensemble.json",
              "--pooled-ap", "pooled.csv")
    q, r = load_features("fold0/query.npz"), load_features("fold0/reference.npz")
    scores = dict(zip(q.ids.tolist(), (q.embeddings.astype(np.float64) @ r.embeddings.astype(np.float64).T)))
    column = {ref: j for j, ref in enumerate(r.ids.tolist())}
    sub = read_submission("submission.csv")
    assert sorted(sub) == sorted(scores) and len(r.ids) > 10
    for qid, ranked in sub.items():
        s = scores[qid][[column[ref] for ref in ranked]]
        assert sorted(ranked) == sorted(column) and np.all(np.diff(s) <= 1e-6), qid  # all, best first

    truth_q = pd.read_csv("data/truth/query.csv", dtype=str).set_index("id")["label"]
    truth_r = pd.read_csv("data/truth/reference.csv", dtype=str)
    aps, p1 = [], []
    for qid, label in truth_q.items():
        relevant = set(truth_r.loc[truth_r["label"] == label, "id"])
        aps.append(naive_ap(sub[qid], relevant))
        p1.append(float(sub[qid][0] in relevant))
    capsys.readouterr()
    from stages import score
    assert score.main(["--submission", "submission.csv", "--truth", "data/truth"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["map@1000"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert scored["p@1"] == pytest.approx(np.mean(p1), abs=1e-12) and scored["n_queries"] == len(truth_q)


def assert_wall_times(paths: list[str], with_images: list[str]) -> None:
    """Every stage's metrics carry its own wall time; stages that process images, their rate."""
    for path in paths:
        wall = json.loads(Path(path).read_text())["wall"]
        assert wall["seconds"] > 0, path
        if path in with_images:
            assert wall["images"] > 0 and wall["img_per_s"] == round(wall["images"] / wall["seconds"], 2), path


def test_stage_refuses_bad_params_before_work(tmp_path, monkeypatch, capsys, tiny):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({**tiny, "train": {"epochz": 1}}))
    from stages import split
    assert split.main(["--out", "f.csv", "--metrics", "m.json"]) == 2
    err = capsys.readouterr().err
    assert "train.epochz: is not a known key" in err and "Traceback" not in err
    assert not Path("f.csv").exists()


def dvc_run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)


def dvc(repo: Path, *args: str) -> str:
    out = dvc_run(repo, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def tiny_repo(module_tmp, tiny, tiny_params):
    """A scratch copy of the repository with the tiny params, after one complete ``dvc repro``:
    (repo, its params as a dict)."""
    repo = module_tmp / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", "retrieval", "stages", "synthetic"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / item)
    # DVC wants every declared param present: the repository's params with the tiny overrides
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = tiny_params({**tiny, "data": {"root": "outputs/demo"}}, base)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    first = dvc(repo, "repro")
    assert "Running stage 'check'" in first and "Running stage 'ensemble'" in first and "Running stage 'report'" in first
    return repo, tiny


def ran_stages(out: str) -> list[str]:
    return sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))


def test_dvc_repro_caches_and_reruns_only_what_changed(tiny_repo, tiny_params):
    repo, tiny = tiny_repo
    assert (repo / "outputs/submission/submission.csv").is_file() and (repo / "outputs/report/index.html").is_file()
    assert "Running stage" not in dvc(repo, "repro")  # nothing changed: nothing runs
    # `dvc metrics show` answers where the run's time went: every stage's own wall time
    shown = json.loads(dvc(repo, "metrics", "show", "--json"))
    files = {Path(path).as_posix(): m["data"] for rev in shown.values() for path, m in rev["data"].items()}
    expected = {"outputs/metrics/demo.json", "outputs/check/metrics.json", "outputs/split/metrics.json",
                "outputs/ensemble/metrics.json", "outputs/metrics/report.json", "outputs/metrics/bundle.json",
                *(f"outputs/{s}/fold{f}/metrics.json" for s in ("train", "extract", "rerank") for f in (0, 1))}
    assert set(files) == expected
    assert all(data["wall"]["seconds"] > 0 for data in files.values()), files
    # the plots render: training curves of both folds (fold 2 of the default three is absent
    # here and reported missing, not fatal) and each fold's re-ranking ablation
    dvc(repo, "plots", "show", "-o", "plots_html")
    page = (repo / "plots_html" / "index.html").read_text()
    for name in ("validation mAP@1000", "training loss", "learning rate", "fold1/history.csv",
                 "outputs/rerank/fold0/ablation.csv"):
        assert name in page, name
    changed = tiny_params({"rerank": {"qe": {"alpha": 1.0}}}, tiny)
    (repo / "params.yaml").write_text(yaml.safe_dump(changed))
    # check reads the whole params.yaml and reruns, but writes the same line: only the report and
    # the summary (they show its wall time) would rerun for it; the report ranks validation as
    # rerank does; the bundle holds the online steps' settings
    assert ran_stages(dvc(repo, "repro")) == ["bundle", "check", "ensemble", "report", "rerank@0", "rerank@1", "summary"]


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every file under outputs/, and dvc.lock, as bytes."""
    files = [f for f in (repo / "outputs").rglob("*") if f.is_file()] + [repo / "dvc.lock"]
    return {f.relative_to(repo).as_posix(): f.read_bytes() for f in files}


# a params mistake stops `dvc repro` in the check stage (or, for the demo section, in demo, whose
# output persists), before DVC removes any output: every earlier file is still there, byte for byte
@pytest.mark.parametrize("change,needle", [
    ({"train": {"epoch": 3}}, "train.epoch: is not a known key"),
    ({"rerank": {"qe": {"kk": 3}}}, "rerank.qe.kk: is not a known key"),
    ({"cv": {"n_folds": 7, "folds": [0, 1]}}, "cv.n_folds 7 exceeds the 6 training classes"),
    ({"demo": {"sed": 1}}, "demo.sed: is not a known key"),
], ids=["train-typo", "rerank-typo", "n_folds-vs-data", "demo-typo"])
def test_dvc_repro_refuses_a_params_mistake_and_keeps_every_output(tiny_repo, change, needle, tiny_params):
    repo, tiny = tiny_repo
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny))
    dvc(repo, "repro")  # whatever an earlier test left: a complete, current run
    before = snapshot(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(change, tiny)))
    out = dvc_run(repo, "repro")
    assert out.returncode != 0 and needle in out.stderr, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert ran_stages(out.stdout) == (["demo"] if "demo" in change else ["check"])
    assert snapshot(repo) == before


def test_a_second_dvc_repro_at_once_is_refused_and_the_first_finishes(tiny_repo, tiny_params):
    repo, tiny = tiny_repo
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny))
    dvc(repo, "repro")
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params({"rerank": {"qe": {"alpha": 2.0}}}, tiny)))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    first = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in first.stdout:  # once it runs a stage, it holds the repository's lock
        if line.startswith("Running stage"):
            break
    second = dvc_run(repo, "repro")
    rest = first.communicate()[0]
    assert first.returncode == 0, rest
    # DVC's own refusal: a path the first run reads or writes is locked ('... is busy, it is being
    # blocked by: (PID ...)'), or the repository is ('Unable to acquire lock')
    assert second.returncode != 0 and ("is busy" in second.stderr or "Unable to acquire lock" in second.stderr), \
        second.stdout + second.stderr
    assert "Running stage" not in second.stdout
    assert "Running stage" not in dvc(repo, "repro")  # the first run's results are complete and current
