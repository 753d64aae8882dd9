"""The files of a bundle folder, their one writer (:func:`write_bundle`) and readers.

::

    manifest.json        format, format version, sha256 of every other file (written last)
    settings.json        folds (weights, backbones, ONNX files, mean/std, member weights), the
                         TTA (image_size, scales, their input sizes, flip_tta), the online
                         re-ranking (rerank steps dba/qe with their k and alpha, rerank.k, the
                         index kind), what was left out (diffusion, k-reciprocal: offline)
    params.json          the params the bundle was built with (a snapshot)
    models/fold<f>_member<m>.onnx   each backbone's eval forward (L2-normalised embedding), dynamic batch and size
    whitening.npz        fold<f>_member<m>_mean / _projection (absent: no whitening)
    references.npz       ids; raw_fold<f>: the references' embeddings after the pipeline's
                         transforms; db_fold<f>: the same after DBA (what is searched)
    fold<f>.faiss        a faiss index of db_fold<f> (exact inner product, or rerank.index's kind)
    thumbnails.zip       <id>.jpg: a small JPEG of each reference (stored, not compressed)

Arrays are written as ``.npz`` with fixed zip timestamps, so equal contents give equal bytes.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import faiss
import numpy as np

from retrieval.bundle.manifest import write_manifest
from retrieval.config import IndexParams
from retrieval.io import UNREADABLE_NPZ, InputError
from retrieval.rank.expansion import dba
from retrieval.rank.knn import build_index

SETTINGS, PARAMS, WHITENING, REFERENCES, THUMBNAILS = (
    "settings.json", "params.json", "whitening.npz", "references.npz", "thumbnails.zip")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def model_file(fold: int, member: int) -> str:
    return f"models/fold{fold}_member{member}.onnx"


def index_file(fold: int) -> str:
    return f"fold{fold}.faiss"


@dataclass
class Parts:
    """What a bundle holds, in memory: ``models`` maps each ONNX file name to its bytes or to a
    file to copy; ``raw`` each fold's [N, D] reference embeddings in ``ids`` order;
    ``thumbnails`` (id, JPEG bytes) pairs."""
    settings: dict
    params: dict
    models: dict[str, bytes | Path]
    whitenings: dict[str, np.ndarray]
    ids: list[str]
    raw: dict[int, np.ndarray]
    thumbnails: Iterable[tuple[str, bytes]] = field(default_factory=list)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` of ``arrays`` (np.load reads it) with fixed member timestamps."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            with z.open(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIME), "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(a), allow_pickle=False)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except UNREADABLE_NPZ as err:
        raise InputError(f"{path}: not a readable array file ({type(err).__name__}: {err})") from None


def searched_vectors(raw: np.ndarray, settings: dict) -> np.ndarray:
    """The references as searched: after DBA when the bundle's steps hold it (exactly as
    :func:`retrieval.rank.chain.rank` runs it), else as they are."""
    rr = settings["rerank"]
    if "dba" not in rr["steps"]:
        return np.ascontiguousarray(raw, dtype=np.float32)
    return dba(raw, rr["dba"]["k"], rr["dba"]["alpha"], IndexParams(**rr["index"]))


def _write_thumbnails(path: Path, thumbnails: Iterable[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for ref_id, jpeg in thumbnails:
            z.writestr(zipfile.ZipInfo(f"{ref_id}.jpg", date_time=ZIP_TIME), jpeg)


def write_bundle(folder: Path, parts: Parts) -> None:
    """Write every file of a bundle into the new, empty ``folder``, the manifest last, and
    fsync them all (and the folders) so that a rename of ``folder`` publishes a whole bundle."""
    folder.mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / SETTINGS).write_text(json.dumps(parts.settings, indent=2, sort_keys=True) + "\n")
    (folder / PARAMS).write_text(json.dumps(parts.params, indent=2, sort_keys=True) + "\n")
    for name, src in sorted(parts.models.items()):
        (folder / name).write_bytes(src if isinstance(src, bytes) else Path(src).read_bytes())
    save_arrays(folder / WHITENING, parts.whitenings)
    arrays = {"ids": np.asarray(parts.ids, dtype=str)}
    for fold, raw in sorted(parts.raw.items()):
        db = searched_vectors(raw, parts.settings)
        arrays[f"raw_fold{fold}"], arrays[f"db_fold{fold}"] = raw.astype(np.float32), db
        faiss.write_index(build_index(db, IndexParams(**parts.settings["rerank"]["index"])),
                          str(folder / index_file(fold)))
    save_arrays(folder / REFERENCES, arrays)
    _write_thumbnails(folder / THUMBNAILS, parts.thumbnails)
    write_manifest(folder)
    fsync_tree(folder)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (and itself)."""
    for p in sorted(folder.rglob("*")) + [folder]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
