"""synthetic/dataset.py: the layout, counts, determinism and opaque ids of a written set, and the
demo set's own folder (replaced whole, a user's data refused)."""
import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.config import DemoParams
from retrieval.io import InputError
from synthetic import dataset
from synthetic.dataset import (MARKER, check_demo_folder, demo_plan, image_id, is_demo_root, make_demo, write_class,
                               write_set)

SMALL = DemoParams(n_train_classes=3, n_test_classes=2, train_per_class=2, queries_per_class=2,
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
    return module_tmp, make_demo(module_tmp, DemoParams())


def test_layout_and_counts(default_set):
    out, counts = default_set
    assert counts == {"train_images": 120, "queries": 24, "references": 32,
                      "train_classes": 12, "test_classes": 8}
    assert sorted(p.name for p in out.iterdir()) == ["generated-by-demo.txt", "test", "train", "truth"]
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
    assert (out / "train" / "product-00" / f"{image_id('t', 0, 'train', 0, 0)}.jpg").is_file()


def test_image_id_golden():
    assert image_id("t", 0, "train", 0, 0) == "t69d10f48325e"
    assert image_id("q", 0, "train", 0, 0) == "q69d10f48325e"  # the prefix is not hashed


def test_same_args_give_identical_bytes(default_set, tmp_path):
    out, _ = default_set
    make_demo(tmp_path / "again", DemoParams())
    assert digests(tmp_path / "again") == digests(out)


def test_different_seed_gives_different_bytes(tmp_path):
    make_demo(tmp_path / "a", SMALL.model_copy(update={"seed": 0}))
    make_demo(tmp_path / "b", SMALL.model_copy(update={"seed": 1}))
    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    for d in (a, b):
        d.pop("generated-by-demo.txt")  # the marker: the same text whatever the seed
    assert a.keys().isdisjoint(b.keys() - {"truth/query.csv", "truth/reference.csv"})
    assert set(a.values()).isdisjoint(b.values())


def test_rerun_replaces_the_tree_and_keeps_other_files(tmp_path):
    out = tmp_path / "demo"
    make_demo(out, SMALL)
    first = digests(out)
    (out / "train" / "product-00" / "stale.jpg").write_bytes(b"old")
    (out / "train" / "product-99").mkdir()
    (out / "test" / "query" / "qstale.jpg").write_bytes(b"old")
    (out / "notes.txt").write_text("keep me")
    make_demo(out, SMALL)
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


def test_demo_plan_golden():
    p = DemoParams(n_train_classes=2, n_test_classes=1, train_per_class=3, queries_per_class=2,
                   photos_per_ref_class=0)
    assert demo_plan(p) == [(3, 0, 0), (3, 0, 0), (0, 2, 1)]  # a test class: its photos and one catalog image


def test_catalog_only_references(tmp_path):
    counts = make_demo(tmp_path, SMALL.model_copy(update={"photos_per_ref_class": 0}))
    assert counts["references"] == 2
    assert len(read_truth(tmp_path / "truth" / "reference.csv")) == 2


def test_a_class_last_reference_is_its_catalog_image(tmp_path):
    rows = write_class(tmp_path, 0, 48, 4, 0, 1, 2)
    assert [(s, i[0], lab) for s, i, lab in rows] == [("query", "q", "product-04"), ("reference", "r", "product-04"),
                                                      ("reference", "r", "product-04")]
    corners = {}
    for _, i, _ in rows[1:]:
        im = np.asarray(Image.open(tmp_path / "test/reference" / f"{i}.jpg")).astype(int)
        corners[i] = (im[:4, :4] >= 250).all()
    assert list(corners.values()) == [False, True]  # a shelf photo, then the clean catalog image


def test_write_set_gives_the_same_bytes_in_one_process_or_two(tmp_path):
    plan = [(3, 0, 0), (2, 0, 0), (0, 2, 3), (0, 1, 1)]
    a = write_set(tmp_path / "a", 5, 32, plan)
    b = write_set(tmp_path / "b", 5, 32, plan, jobs=2)
    assert a == b == {"train": 5, "query": 3, "reference": 4}
    assert digests(tmp_path / "a") == digests(tmp_path / "b") and len(digests(tmp_path / "a")) == 5 + 3 + 4 + 2


def test_an_id_collision_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, "image_id", lambda prefix, *parts: prefix + "0" * 12)
    with pytest.raises(RuntimeError, match="two images drew one id"):
        write_set(tmp_path, 0, 32, [(2, 0, 0)])


def test_a_demo_set_without_the_marker_is_still_rewritten(tmp_path):
    out = tmp_path / "demo"
    make_demo(out, SMALL)
    first = digests(out)
    (out / MARKER).unlink()  # as written before the marker existed
    make_demo(out, SMALL)
    assert digests(out) == first


def test_a_folder_the_demo_did_not_write_is_refused(tmp_path):
    (tmp_path / "mine" / "train" / "cola").mkdir(parents=True)
    (tmp_path / "mine" / "train" / "cola" / "1.jpg").write_bytes(b"x")  # not a demo file name
    with pytest.raises(InputError, match="holds files the demo stage did not write"):
        check_demo_folder(tmp_path / "mine")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="exists and is not a directory"):
        check_demo_folder(tmp_path / "file")
    check_demo_folder(tmp_path / "absent")  # absent, or empty: the demo's to fill
    (tmp_path / "empty").mkdir()
    check_demo_folder(tmp_path / "empty")


def test_a_link_is_refused_even_to_a_demo_folder(tmp_path):
    make_demo(tmp_path / "real", SMALL)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InputError, match="symbolic link"):
        make_demo(tmp_path / "link", SMALL)


def test_is_demo_root_compares_paths_not_spellings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_demo_root("outputs/demo", "./outputs/demo/")
    assert is_demo_root(str(tmp_path / "outputs/demo"), "outputs/demo")
    assert not is_demo_root("outputs/demo2", "outputs/demo")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "other").symlink_to(tmp_path / "outputs")
    assert not is_demo_root("other/demo", "outputs/demo")  # links not followed
