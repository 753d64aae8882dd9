"""The synthetic demo set: layout, counts, determinism, opaque ids, learnable classes, the CLI."""
import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.data.demo import make_demo
from stages import demo as demo_stage

SMALL = dict(n_train_classes=3, n_test_classes=2, train_per_class=2, queries_per_class=2,
             photos_per_ref_class=1, size=48)


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_truth(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"]
    return [tuple(r) for r in rows[1:]]


@pytest.fixture(scope="module")
def default_set(module_tmp):
    return module_tmp, make_demo(module_tmp)


def test_layout_and_counts(default_set):
    out, counts = default_set
    assert counts == {"train_images": 120, "queries": 24, "references": 32,
                      "train_classes": 12, "test_classes": 8}
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "truth"]
    classes = sorted(p.name for p in (out / "train").iterdir())
    assert classes == [f"product-{i:02d}" for i in range(12)]
    assert all(len(list((out / "train" / c).glob("*.jpg"))) == 10 for c in classes)
    queries = list((out / "test" / "query").iterdir())
    refs = list((out / "test" / "reference").iterdir())
    assert len(queries) == 24 and len(refs) == 32
    for p in [*queries[:3], *refs[:3], next((out / "train" / classes[0]).iterdir())]:
        with Image.open(p) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (96, 96))


def test_truth_matches_files_and_classes_are_unseen(default_set):
    out, _ = default_set
    q = read_truth(out / "truth" / "query.csv")
    r = read_truth(out / "truth" / "reference.csv")
    assert [i for i, _ in q] == sorted(i for i, _ in q)  # sorted by id
    assert [i for i, _ in r] == sorted(i for i, _ in r)
    assert {i for i, _ in q} == {p.stem for p in (out / "test" / "query").glob("*.jpg")}
    assert {i for i, _ in r} == {p.stem for p in (out / "test" / "reference").glob("*.jpg")}
    test_classes = {f"product-{i:02d}" for i in range(12, 20)}
    assert {lab for _, lab in q} == {lab for _, lab in r} == test_classes
    assert all(sum(lab == c for _, lab in r) == 4 for c in test_classes)  # 3 photos + 1 catalog
    assert not test_classes & {p.name for p in (out / "train").iterdir()}


def test_ids_are_unique_and_opaque(default_set):
    out, _ = default_set
    files = list(out.rglob("*.jpg"))
    ids = [p.stem for p in files]
    assert len(ids) == len(set(ids)) == 176
    assert all("product" not in p.name and "-" not in p.stem for p in files)
    for p in files:
        prefix = {"train": "t", "query": "q", "reference": "r"}[
            "train" if p.parent.parent.name == "train" else p.parent.name]
        assert p.stem[0] == prefix and len(p.stem) == 13 and int(p.stem[1:], 16) >= 0


def test_same_args_give_identical_bytes(default_set, tmp_path):
    out, _ = default_set
    make_demo(tmp_path / "again")
    assert digests(tmp_path / "again") == digests(out)


def test_different_seed_gives_different_bytes(tmp_path):
    make_demo(tmp_path / "a", seed=0, **SMALL)
    make_demo(tmp_path / "b", seed=1, **SMALL)
    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert a.keys().isdisjoint(b.keys() - {"truth/query.csv", "truth/reference.csv"})
    assert set(a.values()).isdisjoint(b.values())


def test_rerun_replaces_the_tree_and_keeps_other_files(tmp_path):
    out = tmp_path / "demo"
    make_demo(out, **SMALL)
    first = digests(out)
    (out / "train" / "product-00" / "stale.jpg").write_bytes(b"old")
    (out / "train" / "product-99").mkdir()
    (out / "test" / "query" / "qstale.jpg").write_bytes(b"old")
    (out / "notes.txt").write_text("keep me")
    make_demo(out, **SMALL)
    assert not (out / "train" / "product-00" / "stale.jpg").exists()
    assert not (out / "train" / "product-99").exists()
    assert not (out / "test" / "query" / "qstale.jpg").exists()
    assert (out / "notes.txt").read_text() == "keep me"
    assert {k: v for k, v in digests(out).items() if k != "notes.txt"} == first
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging dir left


def _pixels(path: Path, n: int = 16) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((n, n), Image.Resampling.BOX), np.float32)


def test_classes_are_learnable_but_not_by_mean_colour(default_set):
    out, _ = default_set
    images, labels = [], []
    for c in sorted((out / "train").iterdir()):
        for p in sorted(c.glob("*.jpg")):
            images.append(_pixels(p))
            labels.append(c.name)
    x, y = np.stack(images), np.array(labels)
    chance = 1 / 12

    def loo_accuracy(feats: np.ndarray, cosine: bool) -> float:
        f = feats.reshape(len(feats), -1).astype(np.float64)
        if cosine:
            f = f - f.mean(1, keepdims=True)
            f /= np.linalg.norm(f, axis=1, keepdims=True)
            dist = -f @ f.T
        else:
            dist = ((f[:, None] - f[None]) ** 2).sum(-1)
        np.fill_diagonal(dist, np.inf)
        return float((y[dist.argmin(1)] == y).mean())

    pixel_acc = loo_accuracy(x, cosine=True)          # ~0.4 on the default set
    colour_acc = loo_accuracy(x.mean((1, 2)), cosine=False)  # ~0.1
    assert pixel_acc > 2 * chance
    assert colour_acc < 0.6 and colour_acc < pixel_acc


@pytest.mark.parametrize("kwargs,name", [
    (dict(size=31), "size"),
    (dict(size=64.0), "size"),
    (dict(n_train_classes=0), "n_train_classes"),
    (dict(n_test_classes=-1), "n_test_classes"),
    (dict(train_per_class=0), "train_per_class"),
    (dict(queries_per_class=0), "queries_per_class"),
    (dict(photos_per_ref_class=-1), "photos_per_ref_class"),
    (dict(train_per_class=True), "train_per_class"),
    (dict(seed="0"), "seed"),
])
def test_bad_args_name_the_argument(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_demo(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_catalog_only_references(tmp_path):
    counts = make_demo(tmp_path, **{**SMALL, "photos_per_ref_class": 0})
    assert counts["references"] == 2
    assert len(read_truth(tmp_path / "truth" / "reference.csv")) == 2


def test_cli_reads_demo_params(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\ndemo:\n" + "".join(f"  {k}: {v}\n" for k, v in SMALL.items()))
    assert demo_stage.main(["--out", str(tmp_path / "d"), "--params", str(params)]) == 0
    assert "6 train images of 3 classes" in capsys.readouterr().out
    make_demo(tmp_path / "e", **SMALL)  # the top-level seed is not the demo seed
    assert digests(tmp_path / "d") == digests(tmp_path / "e")


def test_cli_unknown_key_is_refused(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("demo:\n  seed: 0\n  n_classes: 5\n")
    assert demo_stage.main(["--out", str(tmp_path / "d"), "--params", str(params)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {params}: demo.n_classes: is not a known key"
    assert not (tmp_path / "d").exists()


def test_cli_bad_value_is_refused(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("demo:\n  size: 8\n")
    assert demo_stage.main(["--out", str(tmp_path / "d"), "--params", str(params)]) == 2
    assert "demo.size" in capsys.readouterr().err
