"""Swapping a bundle folder whole: the exchange, the rename fallback and its crash repair, the
leftovers of a killed writer, the writers' lock."""
import os

import pytest

from retrieval.bundle import swap
from retrieval.bundle.swap import locked, publish, remove_leftovers, restore_aside, temp_beside
from retrieval.io import InputError


def folder(path, text: str):
    path.mkdir(parents=True)
    (path / "settings.json").write_text(text)
    return path


def test_temp_names_are_hidden_beside_and_name_the_writer(tmp_path):
    new = temp_beside(tmp_path / "bundle", "new")
    assert new.parent == tmp_path and new.name == f".bundle.new-{os.getpid()}"


def test_publish_puts_a_first_bundle_in_place(tmp_path):
    new = folder(temp_beside(tmp_path / "bundle", "new"), "v1")
    publish(new, tmp_path / "bundle")
    assert (tmp_path / "bundle" / "settings.json").read_text() == "v1" and not new.exists()


@pytest.mark.parametrize("exchange", [True, False])
def test_publish_replaces_the_old_bundle_whole_and_leaves_nothing_beside(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(swap, "_exchange", lambda a, b: False)  # a file system without RENAME_EXCHANGE
    path = folder(tmp_path / "bundle", "old")
    (path / "old_only.txt").write_text("gone after")
    publish(folder(temp_beside(path, "new"), "new"), path)
    assert sorted(p.name for p in path.iterdir()) == ["settings.json"]
    assert (path / "settings.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_the_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = folder(tmp_path / "a", "A"), folder(tmp_path / "b", "B")
    if not swap._exchange(a, b):
        pytest.skip("this file system has no RENAME_EXCHANGE")
    assert (a / "settings.json").read_text() == "B" and (b / "settings.json").read_text() == "A"


def test_a_crash_between_the_fallbacks_renames_is_repaired(tmp_path):
    path = tmp_path / "bundle"
    folder(path.with_name(".bundle.old-12345"), "old")  # renamed aside, the new one never renamed in
    folder(path.with_name(".bundle.new-12345"), "half written")
    remove_leftovers(path)
    assert (path / "settings.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    restore_aside(path)  # nothing aside any more: a no-op
    assert (path / "settings.json").read_text() == "old"


def test_a_second_writer_is_refused_while_the_lock_is_held(tmp_path):
    path = tmp_path / "bundle"
    with locked(path):
        with pytest.raises(InputError, match=r"bundle: another process is rewriting this bundle"):
            with locked(path):
                pass
    with locked(path):  # released
        pass
    assert list(tmp_path.iterdir()) == []  # the lock leaves no file
