"""Replacing a bundle folder whole: the new one is written beside it (``.<name>.new-<pid>``),
fsynced, then exchanged with the old in one ``renameat2(RENAME_EXCHANGE)`` (Linux 3.15+), so
that whatever kills the writer (SIGKILL, power loss after the fsyncs) leaves at ``<name>``
either the old bundle or the new one, never a mix. The old one, now under the temporary name,
is removed afterwards; leftovers of a killed writer are removed by the next one.

On a file system without the exchange, the old folder is renamed aside and the new one renamed
into place (a crash between the two leaves the old one at ``.<name>.old-<pid>`` and no bundle
at ``<name>``: :func:`restore_aside` puts it back). Writers hold a lock on the parent folder."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import Iterator

from retrieval.io import InputError

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def temp_beside(path: Path, what: str) -> Path:
    """A fresh name beside ``path`` for a folder being written (``what``: new, old)."""
    return path.with_name(f".{path.name}.{what}-{os.getpid()}")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the kernel or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(new: Path, path: Path) -> None:
    """Make the written folder ``new`` the bundle at ``path`` (which may not exist yet)."""
    if not path.exists():
        os.rename(new, path)
    elif _exchange(new, path):
        _fsync_dir(path.parent)
        shutil.rmtree(new)  # the old bundle, now under the temporary name
    else:
        aside = temp_beside(path, "old")
        os.rename(path, aside)
        os.rename(new, path)
        _fsync_dir(path.parent)
        shutil.rmtree(aside)
    _fsync_dir(path.parent)


def restore_aside(path: Path) -> None:
    """After a crash of the fallback between its two renames: the old bundle put back."""
    if not path.exists():
        for aside in sorted(path.parent.glob(f".{path.name}.old-*")):
            os.rename(aside, path)
            return


def remove_leftovers(path: Path) -> None:
    """Folders a killed writer left beside ``path`` (call while holding :func:`locked`)."""
    restore_aside(path)
    for p in path.parent.glob(f".{path.name}.*-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold a lock (flock) on the folder that holds the bundle, leaving no file behind; a second
    writer at the same time is refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{path}: another process is rewriting this bundle; try again when it is done") from None
        yield
    finally:
        os.close(fd)  # releases the lock
