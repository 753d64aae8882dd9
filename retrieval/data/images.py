"""Reading the competition layout: image listings and decoding (every decoder failure one line).

Layout under a data root::

    train/<class>/<image>      labelled training images
    test/query/<image>         queries      (id = file name without extension)
    test/reference/<image>     references
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import joblib
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from retrieval.io import InputError

log = logging.getLogger(__name__)

IMAGE, ID, LABEL = "image", "id", "label"  # the columns of the image tables (scan_train: all three)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def _is_candidate(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name != "Thumbs.db"


def _list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files in ``folder`` sorted by name, and the files skipped (no image extension)."""
    files = sorted(p for p in folder.iterdir() if _is_candidate(p))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    skipped = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    return images, skipped


def _check_unique_ids(ids: Sequence[str], paths: Sequence[Path], where: str, in_submission: bool = False) -> None:
    seen: dict[str, Path] = {}
    for i, p in zip(ids, paths):
        if in_submission and (any(ch.isspace() for ch in i) or "," in i or '"' in i):
            raise InputError(f"{p}: the id {i!r} holds a space, comma or double quote, which a submission "
                             "(query_id,reference_ids separated by spaces) cannot hold; rename the file")
        if i in seen:
            raise InputError(f"{where}: two files share the id '{i}': {seen[i].name} and {p.name}")
        seen[i] = p


def _files_below(folder: Path) -> list[Path]:
    """Every file in the subfolders of ``folder``, at any depth (hidden ones and Thumbs.db aside), sorted."""
    return sorted(Path(d, n) for sub in folder.iterdir() if sub.is_dir() and not sub.name.startswith(".")
                  for d, dirs, files in os.walk(sub) for n in files
                  if not n.startswith(".") and n != "Thumbs.db" and not Path(d).name.startswith("."))


def _some(paths: Sequence[Path], n: int = 3) -> str:
    """The first ``n`` of ``paths``, and how many more."""
    shown = ", ".join(str(p) for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def skipped_train_files(root: str | Path) -> list[Path]:
    """Files under ``train/`` that :func:`scan_train` does not take, sorted: loose in train/ (no
    class), one folder too deep (train/<class>/<sub>/...), or without an image extension."""
    train = Path(root) / "train"
    skipped = [p for p in train.iterdir() if _is_candidate(p)]
    for cls in (p for p in train.iterdir() if p.is_dir() and not p.name.startswith(".")):
        skipped += _list_images(cls)[1] + _files_below(cls)
    return sorted(skipped)


def scan_train(root: str | Path) -> pd.DataFrame:
    """One row per training image: ``image`` (path relative to root), ``id``, ``label``.

    A training id is ``<class>/<stem>``: class folders may reuse file names (``1.jpg`` in each),
    but one folder may not hold two files of one stem (``a.jpg`` and ``a.png``). Files not taken
    (:func:`skipped_train_files`) are logged with their count; the check stage counts them.
    """
    root = Path(root)
    train = root / "train"
    if not train.is_dir():
        raise InputError(f"{train}: no train/ folder (expected train/<class>/<image>)")
    rows = []
    for cls in sorted(p for p in train.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images, _ = _list_images(cls)
        if not images:
            log.warning("%s: empty class folder, skipped", cls)
        _check_unique_ids([p.stem for p in images], images, str(cls))
        for p in images:
            rows.append((p.relative_to(root).as_posix(), f"{cls.name}/{p.stem}", cls.name))
    skipped = skipped_train_files(root)
    if skipped:
        log.warning("%d files under %s skipped (only train/<class>/<image> is taken: none loose in train/, "
                    "none in a class's subfolders, image extensions only): %s", len(skipped), train, _some(skipped))
    if not rows:
        raise InputError(f"{train}: no images found")
    return pd.DataFrame(rows, columns=[IMAGE, ID, LABEL])


def scan_test(root: str | Path, which: str) -> pd.DataFrame:
    """One row per test image of ``which`` ('query' or 'reference'): ``image``, ``id``."""
    if which not in ("query", "reference"):
        raise ValueError(f"which must be 'query' or 'reference', not {which!r}")
    folder = Path(root) / "test" / which
    if not folder.is_dir():
        raise InputError(f"{folder}: no test/{which}/ folder")
    below = _files_below(folder) + [p for p in folder.parent.iterdir()
                                    if _is_candidate(p) and p.suffix.lower() in IMAGE_EXTENSIONS]
    if below:  # a query left out is a submission without it: refused, not skipped
        raise InputError(f"{len(below)} test image(s) outside test/query/ and test/reference/ themselves, e.g. "
                         f"{_some(sorted(below))}: they would be left out; put each directly in test/query/ or test/reference/")
    images, skipped = _list_images(folder)
    if skipped:
        log.warning("%d files without an image extension skipped in %s, e.g. %s",
                    len(skipped), folder, skipped[0])
    if not images:
        raise InputError(f"{folder}: no images found")
    ids = [p.stem for p in images]
    _check_unique_ids(ids, images, str(folder), in_submission=True)
    return pd.DataFrame({IMAGE: [p.relative_to(root).as_posix() for p in images], ID: ids})


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: alpha composited on white, 16-bit scaled to 8 bits."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 257.0 if arr.max(initial=0) > 255 else 1.0
        im = Image.fromarray(np.clip(arr / scale, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max(initial=1.0) or 1.0
        im = Image.fromarray(np.clip(arr / hi * 255, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image as an RGB uint8 array, honouring EXIF orientation.

    Animated images give their first frame. Anything Pillow cannot decode, and images beyond
    Pillow's decompression-bomb limit, raise :class:`InputError` naming the file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.seek(0)
                im = ImageOps.exif_transpose(im)
                return np.asarray(_to_rgb(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(f"{path}: refused, beyond Pillow's decompression-bomb limit "
                         f"of {Image.MAX_IMAGE_PIXELS} pixels ({err})") from None
    except Exception as err:  # noqa: BLE001 - every decoder failure becomes one clear line
        raise InputError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from None


def _decode_error(path: Path) -> str | None:
    try:
        load_image(path)
        return None
    except InputError as err:
        return str(err)


def check_images(root: str | Path, images: Sequence[str], n_jobs: int = -1) -> dict[str, str]:
    """Fully decode every image (in parallel); return {image: reason} for those that fail."""
    root = Path(root)
    errors = joblib.Parallel(n_jobs=n_jobs, batch_size=64)(
        joblib.delayed(_decode_error)(root / i) for i in images) if len(images) > 64 else \
        [_decode_error(root / i) for i in images]
    return {img: err for img, err in zip(images, errors) if err is not None}


def drop_undecodable(table: pd.DataFrame, root: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows of ``table`` whose ``image`` decodes, and {image: reason} for those skipped (logged)."""
    bad = check_images(root, table["image"].tolist())
    for img, reason in bad.items():
        log.warning("skipped undecodable training image: %s", reason)
    if bad:
        log.warning("%d of %d training images skipped as undecodable", len(bad), len(table))
    return table[~table["image"].isin(list(bad))].reset_index(drop=True), bad


def check_test_images(root: str | Path, query: pd.DataFrame, reference: pd.DataFrame,
                      bad_query: str) -> list[str]:
    """Decode every test image. An undecodable reference is an error (a submission may only name
    references that exist and were ranked); an undecodable query is an error too, unless
    ``bad_query`` (extract.bad_query) is ``"empty"``: then its id is returned, for an empty
    ranking, and logged.
    """
    bad_refs = check_images(root, reference["image"].tolist())
    if bad_refs:
        first = next(iter(bad_refs.values()))
        raise InputError(f"{len(bad_refs)} undecodable reference image(s); first: {first}")
    bad_q = check_images(root, query["image"].tolist())
    if bad_q and bad_query != "empty":
        first = next(iter(bad_q.values()))
        raise InputError(f"{len(bad_q)} undecodable query image(s); first: {first} "
                         "(set extract.bad_query: empty to give them an empty ranking instead)")
    for reason in bad_q.values():
        log.warning("query given an empty ranking: %s", reason)
    return query.loc[query["image"].isin(list(bad_q)), "id"].tolist()


# -- the data a stage read, unchanged while it ran (issue 31) ------------------------------------

def data_listing(root: str | Path, parts: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``{path under root: (size, mtime_ns)}`` of every file under ``root/<part>``, recursively."""
    root, out = Path(root), {}
    for part in parts:
        for folder, _, files in os.walk(root / part):
            for name in files:
                st = os.stat(os.path.join(folder, name))
                out[Path(folder, name).relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def listing_digest(listing: dict[str, tuple[int, int]]) -> str:
    """sha256 of a listing's names and sizes (not its times: the same data copied elsewhere, or
    generated again, gives the same digest)."""
    return hashlib.sha256("".join(f"{k}\t{v[0]}\n" for k, v in sorted(listing.items())).encode()).hexdigest()


def _changes(root: str | Path, stage: str, before: dict, after: dict) -> str:
    added, removed = after.keys() - before.keys(), before.keys() - after.keys()
    changed = {k for k in before.keys() & after.keys() if before[k] != after[k]}
    where = os.path.commonpath([os.path.dirname(k) for k in added | removed | changed]) or "."
    counts = ", ".join(f"{len(s)} file{'s' * (len(s) != 1)} {w}" for s, w in
                       ((added, "added"), (removed, "removed"), (changed, "changed")) if s)
    return f"{Path(root, where).as_posix()} changed while {stage} ran ({counts}); run again"


@contextlib.contextmanager
def data_unchanged(root: str | Path, stage: str, parts: Sequence[str] = ("train", "test")) -> Iterator[str]:
    """Run a stage's reading of ``root/<parts>``, listed (names, sizes, times) before and after:
    yields the digest of the data (:func:`listing_digest`), for the stage's outputs, and raises
    :class:`InputError` naming what changed if the data changed meanwhile, so that the stage fails
    (and DVC records no lock for outputs made of data it no longer has)."""
    before = data_listing(root, parts)
    yield listing_digest(before)
    after = data_listing(root, parts)
    if after != before:
        raise InputError(_changes(root, stage, before, after))
