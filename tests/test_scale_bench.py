"""bench/scale.py's generator and stage list, and bench/peak.py's per-process peak memory."""
import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench import peak
from bench.scale import FULL, Counts, dotted, generate, scaled, spread, stage_commands

ROOT = Path(__file__).resolve().parents[1]
TINY = Counts(train_images=13, train_classes=3, queries=5, references=7, test_classes=2)


def tree(folder: Path) -> dict[str, str]:
    return {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def test_generate_writes_the_layout_and_counts(tmp_path):
    info = generate(tmp_path / "d", TINY, seed=5, size=32)
    d = tmp_path / "d"
    assert {k: info[k] for k in ("train_images", "queries", "references")} == \
        {"train_images": 13, "queries": 5, "references": 7}
    per_class = {p.name: len(list(p.glob("*.jpg"))) for p in (d / "train").iterdir()}
    assert sorted(per_class.values(), reverse=True) == spread(13, 3) == [5, 4, 4]
    assert len(list((d / "test/query").glob("*.jpg"))) == 5 and len(list((d / "test/reference").glob("*.jpg"))) == 7
    q, r = (pd.read_csv(d / "truth" / f, dtype=str) for f in ("query.csv", "reference.csv"))
    assert sorted(q["id"]) == sorted(p.stem for p in (d / "test/query").glob("*.jpg"))
    assert sorted(r["id"]) == sorted(p.stem for p in (d / "test/reference").glob("*.jpg"))
    assert set(q["label"]) == set(r["label"]) and len(set(q["label"])) == 2
    assert not set(q["label"]) & set(per_class)  # test classes are unseen in train/
    assert r.groupby("label").size().tolist() == [4, 3] and q.groupby("label").size().tolist() == [3, 2]
    assert all(i.startswith("q") for i in q["id"]) and all(i.startswith("r") for i in r["id"])
    from PIL import Image
    assert Image.open(next((d / "test/query").glob("*.jpg"))).size == (32, 32)
    with pytest.raises(ValueError, match="not empty"):
        generate(d, TINY, seed=5, size=32)


def test_generate_is_deterministic_whatever_the_processes(tmp_path):
    for name, seed, jobs in (("a", 5, 1), ("b", 5, 2), ("c", 6, 1)):
        generate(tmp_path / name, TINY, seed=seed, size=32, jobs=jobs)
    a, b, c = (tree(tmp_path / name) for name in "abc")
    assert a == b and len(a) == 13 + 5 + 7 + 2  # the same bytes, in one process or two
    assert set(c) != set(a)  # another seed: other ids (and images)


def test_scaled_counts():
    assert scaled(1.0) == FULL
    assert scaled(0.01) == Counts(train_images=736, train_classes=14, queries=180, references=367, test_classes=15)
    with pytest.raises(ValueError, match="too few images"):
        scaled(1e-5, Counts(train_images=10, train_classes=10, queries=1, references=1, test_classes=1))


def test_stage_commands_follow_dvc_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["cv"]["folds"] = [0, 2]
    stages = stage_commands(params)
    # demo too: with data.root another set it generates nothing, but writes the metrics report reads
    assert [s[0] for s in stages] == ["demo", "check", "split", "train@0", "train@2", "extract@0", "extract@2",
                                      "rerank@0", "rerank@2", "ensemble", "bundle", "report", "summary"]
    for name, argv, metrics in stages:
        assert argv[0] == sys.executable and argv[1:3] == ["-m", f"stages.{name.split('@')[0]}"]
        assert not any("${" in a for a in argv) and len(metrics) == (name != "summary"), (name, argv, metrics)
    train2 = dict((s[0], s[1]) for s in stages)["train@2"]
    assert "outputs/train/fold2/model.pt" in train2 and train2[train2.index("--nproc") + 1] == "1"


def test_dotted_overrides():
    assert dotted(["train.epochs=2", "extract.scales=[1.0, 1.25]", "seed=3"]) == \
        {"train": {"epochs": 2}, "extract": {"scales": [1.0, 1.25]}, "seed": 3}
    with pytest.raises(ValueError):
        dotted(["train.epochs"])


def test_peak_is_the_child_own_high_water_mark():
    big = peak.run([sys.executable, "-c", "x = b'x' * (200 << 20)"])
    assert big.returncode == 0 and big.peak_mb >= 200
    # this process holding 300 MB (touched) does not show up in a small child's figure
    held = np.ones(300 << 18, dtype=np.float32)  # 300 MB
    small = peak.run([sys.executable, "-c", "import sys; print('hi'); sys.exit(3)"], capture=True)
    assert small.returncode == 3 and small.stdout == "hi\n"
    assert small.peak_mb < 100 and held.sum() > 0
    assert 0 < peak.floor() < 100
