"""Small file helpers: atomic writes (text, JSON, ``.npz``, torch), reading damaged files as one
line, the resume-folder lock, and the errors stages print as one line."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator


class InputError(Exception):
    """Bad user input (data, params, a submission): shown as one clear line, no traceback."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, quota, file-size limit


# what np.load and reading a damaged .npz raise: truncated (BadZipFile, EOFError), a member cut
# short (OSError, ValueError), an array missing (KeyError), a meta that is not JSON (ValueError)
UNREADABLE_NPZ = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile)


def read_npz(path: Path, what: str, stage: str, read: Callable[[Any], Any]) -> Any:
    """``read`` applied to the open ``.npz`` at ``path``; a damaged file is one :class:`InputError`
    naming it as ``what`` and the ``stage`` that writes it."""
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as z:
            return read(z)
    except UNREADABLE_NPZ as err:
        raise InputError(f"{path}: not a readable {what}, empty or truncated? "
                         f"({type(err).__name__}: {err}); re-run the {stage} stage") from None


def versioned_meta(path: Path, z, what: str, stage: str, version: int, needed: str, missing: str) -> dict:
    """The JSON ``meta`` of the open ``.npz`` ``z`` at ``path`` (a ``what`` written by ``stage``),
    refused in one line unless it has the format ``version`` and the key ``needed`` (``missing``
    says what an older file lacks)."""
    meta = json.loads(str(z["meta"])) if "meta" in z else {}
    if "format_version" not in meta or needed not in meta:
        raise InputError(f"{path}: written by an older version (no {missing}); re-run {stage}")
    if meta["format_version"] != version:
        raise InputError(f"{path}: {what} format {meta['format_version']}, this version reads {version}; "
                         f"re-run {stage}")
    return meta


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A killed or failing writer leaves either the old file or none, never a half-written one.
    The file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:  # a write's own error names no file: name the output it was for
        if err.errno in DISK_FULL and not err.filename:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def save_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save`` of ``obj`` to ``path``, serialised in memory first and written by Python,
    so that a full disk is an ``OSError`` with its errno (torch's own writer raises a bare
    RuntimeError), which the stages report in one line."""
    import io as _io

    import torch
    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


@contextlib.contextmanager
def claimed(folder: str | os.PathLike | None) -> Iterator[None]:
    """Hold the resume ``folder`` of a run (its lock file ``<folder>.lock``) while the block runs.

    A second run given the same folder at the same time is refused with one line, instead of
    mixing its saved state or shards with this one's. ``None``: nothing is held.
    """
    if folder is None:
        yield
        return
    lock = Path(folder).with_name(Path(folder).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise InputError(f"{folder}: in use by another run (pid {fh.read().strip() or '?'}); wait for it "
                             "to finish, or give this run another resume folder") from None
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def read_torch_file(path: Path, what: str, hint: str, weights_only: bool) -> object:
    """``torch.load`` of ``path``; an empty, truncated or foreign file is one :class:`InputError`."""
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # noqa: BLE001 - pickle, zip and EOF errors alike mean: not readable
        raise InputError(f"{path}: not a readable {what}, empty or truncated? ({first_line(err)}); {hint}") from None


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """``np.savez`` of ``arrays`` written atomically to ``path`` (through an open file, so numpy
    adds no ``.npz`` to the temporary name)."""
    import numpy as np
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
