"""The synthetic demo set: layout, counts, determinism, opaque ids, learnable classes, the CLI."""
import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.data.demo import make_demo
from retrieval.io import InputError
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


def test_same_args_give_identical_bytes(default_set, tmp_path):
    out, _ = default_set
    make_demo(tmp_path / "again")
    assert digests(tmp_path / "again") == digests(out)


def test_different_seed_gives_different_bytes(tmp_path):
    make_demo(tmp_path / "a", seed=0, **SMALL)
    make_demo(tmp_path / "b", seed=1, **SMALL)
    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    for d in (a, b):
        d.pop("generated-by-demo.txt")  # the marker: the same text whatever the seed
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
    params.write_text(f"seed: 1\ndata:\n  root: {tmp_path / 'd'}\ndemo:\n" + "".join(f"  {k}: {v}\n" for k, v in SMALL.items()))
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


def _user_set(root: Path) -> dict[str, str]:
    """A user's own tiny data set under ``root``; its digests."""
    for part in ("train/cola", "test/query", "test/reference", "truth"):
        (root / part).mkdir(parents=True)
    for name in ("train/cola/1.jpg", "test/query/q1.jpg", "test/reference/r1.jpg", "truth/query.csv"):
        (root / name).write_bytes(f"user's {name}".encode())
    return digests(root)


def _run_demo(tmp_path: Path, out: Path, root: Path) -> int:
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  root: {root}\ndemo:\n" + "".join(f"  {k}: {v}\n" for k, v in SMALL.items()))
    return demo_stage.main(["--out", str(out), "--params", str(params)])


def test_user_data_at_the_demo_folder_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "demo"
    before = _user_set(out)
    assert _run_demo(tmp_path, out, root=out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out}: holds files the demo stage did not write") and "\n" not in err
    assert digests(out) == before


def test_a_linked_demo_folder_is_refused_and_its_target_kept(tmp_path, capsys):
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "demo"
    before = _user_set(elsewhere)
    out.symlink_to(elsewhere)
    assert _run_demo(tmp_path, out, root=out) == 2
    assert capsys.readouterr().err.startswith(f"error: {out}: a symbolic link")
    assert digests(elsewhere) == before
    make_demo(elsewhere / "sub", **SMALL)  # a marker behind the link does not open it either
    (elsewhere / "generated-by-demo.txt").write_text("x")
    with pytest.raises(InputError, match="symbolic link"):
        make_demo(out, **SMALL)


def test_another_data_root_generates_nothing(tmp_path):
    out, user = tmp_path / "demo", tmp_path / "mine"
    before = _user_set(user)
    assert _run_demo(tmp_path, out, root=user) == 0
    assert out.is_dir() and not any(out.iterdir())  # DVC's output, left empty
    assert digests(user) == before
    mine_at_out = _user_set(tmp_path / "demo2")
    assert _run_demo(tmp_path, tmp_path / "demo2", root=user) == 0
    assert digests(tmp_path / "demo2") == mine_at_out
    assert _run_demo(tmp_path, out, root=out) == 0  # the empty folder is the demo's to fill
    assert (out / "generated-by-demo.txt").is_file() and (out / "train").is_dir()


def test_a_demo_set_without_the_marker_is_still_rewritten(tmp_path):
    out = tmp_path / "demo"
    make_demo(out, **SMALL)
    first = digests(out)
    (out / "generated-by-demo.txt").unlink()  # as written before the marker existed
    make_demo(out, **SMALL)
    assert digests(out) == first
