"""Growing and shrinking a bundle's references: :func:`add_references`, :func:`remove_references`.

Each rewrites the bundle whole (:mod:`retrieval.bundle.swap`: a new folder beside it, fsynced,
then swapped in), so a reader opening it, or a writer killed part way, sees the old bundle or
the new one. Added images are embedded by the bundle's own models (ONNX Runtime, as a query
is); DBA is recomputed over all the references, as the pipeline would compute it on them.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from retrieval.bundle.embedder import embed_folds
from retrieval.bundle.layout import PARAMS, REFERENCES, SETTINGS, THUMBNAILS, WHITENING, Parts, load_arrays, write_bundle
from retrieval.bundle.manifest import check_manifest
from retrieval.bundle.preprocess import image_array
from retrieval.bundle.store import Bundle
from retrieval.bundle.swap import locked, publish, remove_leftovers, temp_beside
from retrieval.io import InputError

THUMB_SIDE = 128  # pixels: the longer side of a reference's thumbnail
THUMB_QUALITY = 85


def thumbnail_jpeg(rgb: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    """A JPEG of an RGB uint8 array, its longer side at most ``side``."""
    im = Image.fromarray(rgb)
    im.thumbnail((side, side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=THUMB_QUALITY)
    return out.getvalue()


def check_ids(ids: Sequence[str], what: str) -> None:
    """Reference ids as the pipeline's file stems may be: non-empty strings, unique, and with
    no whitespace, comma, quote or slash (a submission line, and a thumbnail's name, hold them)."""
    seen: set[str] = set()
    for i in ids:
        if not isinstance(i, str) or not i or any(ch.isspace() or ch in ',"/\\' for ch in i):
            raise InputError(f"{what}: id {i!r} must be a non-empty string with no space, comma, quote or slash")
        if i in seen:
            raise InputError(f"{what}: the id {i!r} is given twice")
        seen.add(i)


def read_parts(path: Path) -> Parts:
    """The contents of the (checked) bundle at ``path``, to write a changed copy of."""
    check_manifest(path)
    settings = json.loads((path / SETTINGS).read_text())
    refs = load_arrays(path / REFERENCES)
    models = {m["onnx"]: path / m["onnx"] for f in settings["folds"] for m in f["members"]}
    with zipfile.ZipFile(path / THUMBNAILS) as z:
        thumbs = [(Path(n).stem, z.read(n)) for n in z.namelist()]
    return Parts(settings, json.loads((path / PARAMS).read_text()), models, load_arrays(path / WHITENING),
                 refs["ids"].tolist(), {f["fold"]: refs[f"raw_fold{f['fold']}"] for f in settings["folds"]}, thumbs)


def write_whole(path: Path, parts: Parts) -> None:
    """Write ``parts`` as the bundle at ``path`` (new, or replacing one) through a folder beside
    it; the caller holds the lock (:func:`retrieval.bundle.swap.locked`)."""
    remove_leftovers(path)
    new = temp_beside(path, "new")
    write_bundle(new, parts)
    publish(new, path)


def replace_bundle(path: str | Path, parts: Parts) -> None:
    """Write ``parts`` as the bundle at ``path``, whole (the bundle stage)."""
    path = Path(path)
    with locked(path):
        write_whole(path, parts)


def rewrite(path: Path, change) -> None:
    """Apply ``change`` (Parts -> Parts) to the bundle at ``path`` and swap the result in."""
    path = Path(path)
    with locked(path):
        remove_leftovers(path)
        write_whole(path, change(read_parts(path)))


def add_references(path: str | Path, ids: Sequence[str], images: Sequence[Image.Image]) -> None:
    """Add references (``ids[i]`` the id of ``images[i]``) to the bundle at ``path``. An id the
    bundle holds already, or given twice, is refused (:class:`InputError`), as is an image that
    does not decode; nothing is changed then."""
    ids = list(ids)
    if len(ids) != len(images):
        raise InputError(f"{len(ids)} ids for {len(images)} images")
    check_ids(ids, "add_references")
    arrays = [image_array(im, f"image of {i}") for i, im in zip(ids, images)]

    def change(parts: Parts) -> Parts:
        dup = sorted(set(ids) & set(parts.ids))
        if dup:
            raise InputError(f"{path}: holds the reference id {dup[0]!r} already ({len(dup)} duplicate(s)); "
                             "remove it first to replace it")
        if not ids:
            return parts
        bundle = Bundle.open(path, threads=None)
        new = embed_folds(bundle.models, arrays)
        raw = {fold: np.concatenate([parts.raw[fold], new[fold]]) for fold in parts.raw}
        thumbs = list(parts.thumbnails) + [(i, thumbnail_jpeg(a)) for i, a in zip(ids, arrays)]
        return Parts(parts.settings, parts.params, parts.models, parts.whitenings, parts.ids + ids, raw, thumbs)

    rewrite(path, change)


def remove_references(path: str | Path, ids: Sequence[str]) -> None:
    """Remove the references ``ids`` from the bundle at ``path``. An id it does not hold is
    refused (:class:`InputError`), and so is removing every reference; nothing is changed then."""
    ids = list(ids)

    def change(parts: Parts) -> Parts:
        unknown = [i for i in ids if i not in set(parts.ids)]
        if unknown:
            raise InputError(f"{path}: holds no reference {unknown[0]!r} ({len(unknown)} unknown id(s))")
        gone = set(ids)
        keep = np.array([i not in gone for i in parts.ids], bool)
        if not keep.any():
            raise InputError(f"{path}: removing all {len(parts.ids)} references would leave nothing to search")
        return Parts(parts.settings, parts.params, parts.models, parts.whitenings,
                     [i for i in parts.ids if i not in gone], {f: r[keep] for f, r in parts.raw.items()},
                     [(i, t) for i, t in parts.thumbnails if i not in gone])

    rewrite(path, change)
