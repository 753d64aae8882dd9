"""Sharded, resumable embedding of large image sets into one memory-mapped matrix.

:func:`embed_sharded` embeds ``images`` ``shard_size`` at a time and writes each shard's rows
into ``<work>/embeddings.npy`` (a ``.npy`` opened as a memory map: the matrix lives on disk,
one shard's images and rows are in memory at a time). After every shard it flushes the rows,
then records the count of finished shards in ``progress.json`` (written atomically), so a run
killed at any point restarts from the first shard not recorded. ``manifest.json`` holds the
fingerprint of the work (images, model, preprocessing): a work folder of other work is
discarded, never mixed in.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from retrieval.io import write_json

log = logging.getLogger(__name__)


def fingerprint(images: Sequence[str], **what) -> str:
    """sha256 of the image list and of ``what`` (JSON-able: params, model digest, ...)."""
    h = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode())
    for img in images:
        h.update(img.encode() + b"\0")
    return h.hexdigest()


def embed_sharded(embed: Callable[[list[str]], np.ndarray], images: Sequence[str], work: str | Path,
                  shard_size: int, key: str, desc: str = "embed") -> np.memmap:
    """Rows ``embed(images[a:b])`` for consecutive shards, in a read-only memory map.

    ``key`` is the work's fingerprint (:func:`fingerprint`). Shards already finished in ``work``
    by a run with the same key are kept; everything else in ``work`` is replaced.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    work, images = Path(work), list(images)
    n, n_shards = len(images), -(-len(images) // shard_size)
    manifest_path, progress_path, matrix_path = work / "manifest.json", work / "progress.json", work / "embeddings.npy"
    done, matrix = _resumed(work, key, n, shard_size)
    bar = tqdm(total=n, initial=min(done * shard_size, n), desc=desc, unit="img", disable=None, leave=False)
    for s in range(done, n_shards):
        a, b = s * shard_size, min(n, (s + 1) * shard_size)
        rows = np.asarray(embed(images[a:b]), dtype=np.float32)
        if rows.shape[0] != b - a:
            raise ValueError(f"embedding shard {s}: {rows.shape[0]} rows for {b - a} images")
        if matrix is None:  # the width is known once the first shard is embedded
            matrix = np.lib.format.open_memmap(matrix_path, mode="w+", dtype=np.float32, shape=(n, rows.shape[1]))
            write_json(manifest_path, {"key": key, "n": n, "shard_size": shard_size, "dim": int(rows.shape[1])})
        matrix[a:b] = rows
        matrix.flush()
        write_json(progress_path, {"shards": s + 1, "of": n_shards})
        bar.update(b - a)
    bar.close()
    if matrix is None:  # no images at all
        return np.zeros((0, 0), np.float32)
    del matrix
    return np.load(matrix_path, mmap_mode="r")


def _resumed(work: Path, key: str, n: int, shard_size: int) -> tuple[int, np.memmap | None]:
    """The shards ``work`` already holds of this work (same key, images and shard size) and its
    matrix; or ``(0, None)`` with ``work`` emptied, for other or unreadable work."""
    try:
        done, matrix = _finished_shards(work, key, n, shard_size)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable sharded work (%s); starting afresh", work, err)
        done, matrix = 0, None
    if matrix is None:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        return 0, None
    log.info("%s: resuming after %d of %d shards", work, done, -(-n // shard_size))
    return done, matrix


def _finished_shards(work: Path, key: str, n: int, shard_size: int) -> tuple[int, np.memmap | None]:
    files = work / "manifest.json", work / "progress.json", work / "embeddings.npy"
    if not all(f.is_file() for f in files):
        return 0, None
    manifest = json.loads(files[0].read_text())
    done = int(json.loads(files[1].read_text())["shards"])
    if manifest.get("key") != key or manifest.get("n") != n or manifest.get("shard_size") != shard_size:
        log.warning("%s: sharded work of other images, model or params; starting afresh", work)
        return 0, None
    matrix = np.load(files[2], mmap_mode="r+")
    if matrix.shape[0] != n:
        raise ValueError(f"{matrix.shape[0]} rows for {n} images")
    return done, matrix
