"""The demo stage (stages/demo.py): its params, and only the demo's own folder ever written."""
import hashlib
from pathlib import Path

import pytest

from retrieval.config import DemoParams
from stages import demo as demo_stage
from synthetic.dataset import make_demo

SMALL = dict(n_train_classes=3, n_test_classes=2, train_per_class=2, queries_per_class=2,
             photos_per_ref_class=1, size=48)


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run_demo(tmp_path: Path, out: Path, root: Path, demo: dict = SMALL, top: str = "") -> int:
    params = tmp_path / "params.yaml"
    params.write_text(f"{top}data:\n  root: {root}\ndemo:\n" + "".join(f"  {k}: {v}\n" for k, v in demo.items()))
    return demo_stage.main(["--out", str(out), "--params", str(params)])


def test_cli_reads_demo_params(tmp_path, capsys):
    assert _run_demo(tmp_path, tmp_path / "d", tmp_path / "d", top="seed: 1\n") == 0
    assert "6 train images of 3 classes" in capsys.readouterr().out
    make_demo(tmp_path / "e", DemoParams(**SMALL))  # the top-level seed is not the demo seed
    assert digests(tmp_path / "d") == digests(tmp_path / "e")


def test_cli_unknown_key_is_refused(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("demo:\n  seed: 0\n  n_classes: 5\n")
    assert demo_stage.main(["--out", str(tmp_path / "d"), "--params", str(params)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {params}: demo.n_classes: is not a known key"
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("value", ["size: 31", "size: 64.0", "n_train_classes: 1", "n_test_classes: -1",
                                   "train_per_class: 0", "queries_per_class: 0", "photos_per_ref_class: -1",
                                   "train_per_class: true", "seed: '0'"])
def test_cli_bad_value_is_refused_naming_the_key(tmp_path, capsys, value):
    key, _, v = value.partition(": ")
    assert _run_demo(tmp_path, tmp_path / "d", tmp_path / "d", demo={**SMALL, key: v}) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"demo.{key}" in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def _user_set(root: Path) -> dict[str, str]:
    """A user's own tiny data set under ``root``; its digests."""
    for part in ("train/cola", "test/query", "test/reference", "truth"):
        (root / part).mkdir(parents=True)
    for name in ("train/cola/1.jpg", "test/query/q1.jpg", "test/reference/r1.jpg", "truth/query.csv"):
        (root / name).write_bytes(f"user's {name}".encode())
    return digests(root)


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
    (elsewhere / "generated-by-demo.txt").write_text("x")  # a marker behind the link does not open it either
    assert _run_demo(tmp_path, out, root=out) == 2
    assert "symbolic link" in capsys.readouterr().err


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
