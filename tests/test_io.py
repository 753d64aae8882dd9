"""retrieval/io.py: atomic writes, one-line errors for damaged files, the resume-folder lock."""
import errno
import json
import os
import stat

import numpy as np
import pytest
import torch

from retrieval.io import (InputError, atomic_path, claimed, first_line, read_json, read_npz, read_torch_file,
                          save_npz, save_torch, versioned_meta, write_json)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_path_renames_on_success_with_the_usual_permissions(tmp_path):
    out = tmp_path / "sub" / "a.txt"
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and tmp != out and not out.exists()
        tmp.write_text("new")
    assert out.read_text() == "new" and leftovers(out.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert out.read_text() == "old" and leftovers(tmp_path) == []


def test_a_full_disk_names_the_output(tmp_path):
    out = tmp_path / "big.bin"
    with pytest.raises(OSError) as info:
        with atomic_path(out):
            raise OSError(errno.ENOSPC, "No space left on device")  # a write's error names no file
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(out)
    with pytest.raises(OSError) as other:
        with atomic_path(out):
            raise OSError(errno.EACCES, "Permission denied")
    assert other.value.filename is None  # only the disk-full errors are renamed


def test_json_round_trip_sorted_and_atomic(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"b": 1, "a": [1.5, None]})
    assert read_json(path) == {"b": 1, "a": [1.5, None]}
    assert path.read_text() == '{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": 1\n}\n'


def test_npz_round_trip_and_a_truncated_file_is_one_line(tmp_path):
    path = tmp_path / "f.npz"
    save_npz(path, x=np.arange(5), meta=np.array(json.dumps({"format_version": 2, "fingerprint": "f"})))
    assert read_npz(path, "feature file", "extract", lambda z: z["x"].tolist()) == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["f.npz"]  # numpy added no .npz to a temporary name
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError, match=r"f\.npz: not a readable feature file, empty or truncated\? .*; "
                                         r"re-run the extract stage"):
        read_npz(path, "feature file", "extract", lambda z: z["x"])


def test_a_missing_array_is_one_line(tmp_path):
    path = tmp_path / "f.npz"
    save_npz(path, x=np.arange(2))
    with pytest.raises(InputError, match="KeyError"):
        read_npz(path, "ranking file", "rerank", lambda z: z["ids"])


@pytest.mark.parametrize("meta,needle", [
    (None, "written by an older version (no fingerprint); re-run extract"),
    ({"format_version": 2}, "written by an older version (no fingerprint)"),
    ({"format_version": 1, "fingerprint": "f"}, "feature file format 1, this version reads 2; re-run extract"),
])
def test_versioned_meta_refuses_old_formats(tmp_path, meta, needle):
    path = tmp_path / "f.npz"
    save_npz(path, **({} if meta is None else {"meta": np.array(json.dumps(meta))}), x=np.zeros(1))
    read = lambda z: versioned_meta(path, z, "feature file", "extract", 2, "fingerprint", "fingerprint")  # noqa: E731
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        read_npz(path, "feature file", "extract", read)


def test_versioned_meta_of_the_current_format(tmp_path):
    path = tmp_path / "f.npz"
    save_npz(path, meta=np.array(json.dumps({"format_version": 2, "fingerprint": "f", "k": 3})))
    meta = read_npz(path, "f", "s", lambda z: versioned_meta(path, z, "f", "s", 2, "fingerprint", "fp"))
    assert meta == {"format_version": 2, "fingerprint": "f", "k": 3}


def test_torch_round_trip_and_a_foreign_file_is_one_line(tmp_path):
    path = tmp_path / "model.pt"
    save_torch({"w": torch.arange(3)}, path)
    assert read_torch_file(path, "model", "re-run train", weights_only=True)["w"].tolist() == [0, 1, 2]
    path.write_text("not a checkpoint\nsecond line")
    with pytest.raises(InputError) as info:
        read_torch_file(path, "model", "re-run train", weights_only=True)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not a readable model, empty or truncated? (") and msg.endswith("); re-run train")
    assert "\n" not in msg


def test_claimed_holds_a_folder_for_one_run(tmp_path):
    with claimed(None):  # nothing to hold
        pass
    with claimed(tmp_path / "fold0"):
        assert (tmp_path / "fold0.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(InputError, match=rf"fold0: in use by another run \(pid {os.getpid()}\)"):
            with claimed(tmp_path / "fold0"):
                pass
    with claimed(tmp_path / "fold0"):  # released when the block ends
        pass


def test_first_line_names_the_type_and_cuts_the_rest():
    assert first_line(ValueError("bad\nmore")) == "ValueError: bad"
    assert first_line(KeyError()) == "KeyError: "
    assert first_line(OSError("x" * 500)) == "OSError: " + "x" * 200
