"""The report's section on the run: a chart per fold from its files, a missing history or
ablation left out with a log line, a malformed one refused, and the stages' wall times."""
import json
import logging

import pandas as pd
import pytest

from retrieval.io import InputError
from retrieval.results.run_section import metrics_paths, run_section


@pytest.fixture()
def run(tmp_path):
    """Folds 0 and 2 of a run: fold 2's history is missing."""
    for stage in ("demo", "check", "split", "ensemble"):
        (tmp_path / f"{stage}.json").write_text(json.dumps({"wall": {"seconds": 2.0}}))
    for fold in (0, 2):
        train = {"epoch0_val_map@1000": 0.2, "val_map@1000": 0.5, "best_epoch": 1, "wise_alpha": None,
                 "wise_val_map@1000": {}, "wall": {"seconds": 60.0}}
        (tmp_path / f"train{fold}.json").write_text(json.dumps(train))
        for stage in ("extract", "rerank"):
            (tmp_path / f"{stage}{fold}.json").write_text(json.dumps({"wall": {"seconds": 5.0}}))
        pd.DataFrame({"method": ["none", "final"], "map@1000": [0.4, 0.5], "p@1": [1.0, 1.0]}).to_csv(
            tmp_path / f"ablation{fold}.csv", index=False)
    pd.DataFrame({"epoch": [0, 1], "val_map@1000": [0.2, 0.5]}).to_csv(tmp_path / "history0.csv", index=False)
    metrics = {s: str(tmp_path / (f"{s}{{fold}}.json" if s in ("train", "extract", "rerank") else f"{s}.json"))
               for s in ("demo", "check", "split", "train", "extract", "rerank", "ensemble")}
    return tmp_path, metrics


def test_metrics_paths_fill_the_fold_stages_only():
    paths = metrics_paths({"demo": "d.json", "train": "t{fold}.json"}, [0, 2])
    assert paths == {"demo": ["d.json"], "train": ["t0.json", "t2.json"]}


def test_section_skips_a_missing_history_with_a_log_line(run, caplog):
    tmp, metrics = run
    with caplog.at_level(logging.WARNING):
        section, info = run_section([0, 2], str(tmp / "history{fold}.csv"), str(tmp / "ablation{fold}.csv"), metrics)
    assert info == {"curves": 1, "ablations": 2, "skipped": 1}
    assert f"no training history at {tmp / 'history2.csv'}" in caplog.text
    assert f"Left out (missing): {tmp / 'history2.csv'}" in section
    assert section.count("validation mAP@1000 by epoch</text>") == 1
    assert section.count("re-ranking, validation mAP@1000</text>") == 2
    # wall times: folds added up, in pipeline order
    assert "wall time of each stage" in section
    assert [s in section for s in (">2m00s<", ">10s<", ">2.0s<")] == [True, True, True]


def test_a_history_without_its_columns_is_refused(run):
    tmp, metrics = run
    pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.5]}).to_csv(tmp / "history2.csv", index=False)
    with pytest.raises(InputError, match=r"history2\.csv: a training history needs the columns \['val_map@1000'\]"):
        run_section([0, 2], str(tmp / "history{fold}.csv"), str(tmp / "ablation{fold}.csv"), metrics)
