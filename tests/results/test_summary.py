"""The run's summary: golden lines from fixed metrics, a fold left out of cv.folds, many folds
kept within 15 lines, and one-line errors for a missing or timeless metrics file."""
import json

import pytest
import yaml

from retrieval.io import InputError
from retrieval.results.summary import MAX_LINES, duration, read_stage_metrics, stage_seconds, summary_lines
from stages import summary as summary_stage


def wall(seconds):
    return {"wall": {"seconds": seconds}}


def train(epoch0, kept, best_epoch, seconds, alpha=None, mixes=None):
    return {"epoch0_val_map@1000": epoch0, "val_map@1000": kept, "best_epoch": best_epoch, "wise_alpha": alpha,
            "wise_val_map@1000": mixes or {}, **wall(seconds)}


# folds 0, 2 and 4 of 5 (1 and 3 left out of cv.folds): fold 0 trained past its start, fold 2 did
# not (epoch 0 kept), fold 4's WiSE-FT mix won (its record says epoch 3, the last, and alpha 0.5)
METRICS = {
    "demo": [wall(1.3)], "check": [wall(6.8)], "split": [wall(0.5)],
    "train": [train(0.4561, 0.5066, 3, 70.1), train(0.5603, 0.5603, 0, 65.0),
              train(0.6, 0.65, 3, 80.0, alpha=0.5, mixes={"0.5": 0.65})],
    "extract": [wall(30), wall(40), wall(5)], "rerank": [wall(2), wall(2.5), wall(0.5)],
    "ensemble": [{"cv": {"map@1000": 0.8123, "p@1": 0.9, "n_queries": 54, "map@1000_class_ci95_lo": 0.7012,
                         "map@1000_class_ci95_hi": 0.9034, "map@1000_ci95_lo": 0.7511, "map@1000_ci95_hi": 0.865,
                         "fold_map@1000": {"0": 0.8, "2": 0.7, "4": 0.9}},
                  "test_queries": 6, **wall(1.0)}],
    "report": [wall(12.4)],
}
# 1.3 + 6.8 + 0.5 + (70.1 + 65 + 80) + (30 + 40 + 5) + (2 + 2.5 + 0.5) + 1 + 12.4 = 317.1 s = 5m17s
GOLDEN = [
    "validation mAP@1000  0.8123  (95% interval 0.7012-0.9034, classes resampled)  P@1 0.9000  54 queries",
    "  fold 0  0.8000   training beat its ImageNet start: 0.4561 (epoch 0) -> 0.5066 (epoch 3 kept)",
    "  fold 2  0.7000   training did NOT beat its ImageNet start: 0.5603 (epoch 0 kept)",
    "  fold 4  0.9000   training beat its ImageNet start: 0.6000 (epoch 0) -> 0.6500 (WiSE mix 0.5 kept)",
    "wall time  5m17s in all: demo 1.3s, check 6.8s, split 0.5s, train 3m35s, extract 1m15s, rerank 5.0s, "
    "ensemble 1.0s, report 12s",
    "submission  outputs/submission/submission.csv (6 test queries)",
    "report      outputs/report/index.html",
    "more        dvc metrics show (every figure), dvc plots show (training curves)",
]


def test_summary_lines_golden():
    lines = summary_lines(METRICS, [0, 2, 4], "pypi", "outputs/submission/submission.csv", "outputs/report/index.html")
    assert lines == GOLDEN


def test_durations_and_stage_order():
    assert [duration(s) for s in (0.04, 9.94, 10.4, 59.6, 60, 187, 3599.4, 3900)] == \
        ["0.0s", "9.9s", "10s", "1m00s", "1m00s", "3m07s", "59m59s", "1h05m"]
    # pipeline order whatever the mapping's order; folds added up
    assert stage_seconds({"rerank": [wall(1), wall(2)], "demo": [wall(4)]}) == {"demo": 4.0, "rerank": 3.0}


def test_other_starts_and_several_backbones():
    m = {**METRICS, "train": [{"members": {"lite0": train(0.5, 0.6, 2, 1), "lite2": train(0.55, 0.55, 0, 1)},
                               **train(0.5, 0.6, 2, 2)}] * 3}
    lines = summary_lines(m, [0, 2, 4], "none", "s.csv", "r.html")
    assert lines[1] == ("  fold 0  0.8000   training did NOT beat its untrained start: lite0 0.5000 (epoch 0) -> "
                        "0.6000 (epoch 2 kept); lite2 0.5500 (epoch 0 kept)")


def test_many_folds_stay_within_the_line_budget():
    n = 14
    m = {**METRICS, "train": [train(0.5, 0.6, 1, 1)] * n, "extract": [wall(1)] * n, "rerank": [wall(1)] * n,
         "ensemble": [{**METRICS["ensemble"][0], "cv": {**METRICS["ensemble"][0]["cv"],
                                                         "fold_map@1000": {str(f): 0.5 for f in range(n)}}}]}
    lines = summary_lines(m, list(range(n)), "pypi", "s.csv", "r.html")
    assert len(lines) == MAX_LINES
    assert lines[9] == "  fold 8  0.5000   training beat its ImageNet start: 0.5000 (epoch 0) -> 0.6000 (epoch 1 kept)"
    assert lines[10] == "  ... 5 more folds: dvc metrics show"


def test_metrics_file_faults_are_one_line_errors(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"cv": {}}))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match=r"nope\.json: no such metrics file"):
        read_stage_metrics({"demo": [tmp_path / "nope.json"]})
    with pytest.raises(InputError, match=r"bad\.json: not a readable JSON"):
        read_stage_metrics({"demo": [tmp_path / "bad.json"]})
    with pytest.raises(InputError, match=r"old\.json: no wall\.seconds .*rerun stage ensemble"):
        read_stage_metrics({"ensemble": [tmp_path / "old.json"]})


def test_stage_writes_and_prints_the_lines_for_the_folds_in_params(tmp_path, monkeypatch, capsys):
    # fold 1 and 3 have no files at all: the stage reads only cv.folds' files
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"cv": {"n_folds": 5, "folds": [0, 2, 4]}}))
    args = []
    for stage, contents in METRICS.items():
        pattern = f"m/{stage}{{fold}}.json" if stage in ("train", "extract", "rerank") else f"m/{stage}.json"
        for fold, c in zip([0, 2, 4], contents):
            (tmp_path / "m").mkdir(exist_ok=True)
            (tmp_path / pattern.format(fold=fold)).write_text(json.dumps(c))
        args += [f"--{stage}-metrics", pattern]
    args += ["--submission", "outputs/submission/submission.csv", "--report", "outputs/report/index.html",
             "--out", "summary.txt"]
    assert summary_stage.main(args) == 0
    assert (tmp_path / "summary.txt").read_text() == "\n".join(GOLDEN) + "\n"
    assert capsys.readouterr().out == "\n".join(GOLDEN) + "\n"
    (tmp_path / "m/train2.json").unlink()
    assert summary_stage.main(args) == 2
    assert "m/train2.json: no such metrics file" in capsys.readouterr().err
