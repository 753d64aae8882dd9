"""Writing a synthetic product-photo set in the competition layout, and the demo set's folder.

Layout written under a folder::

    train/<class>/<id>.jpg       labelled photos of the training classes
    test/query/<id>.jpg          photos of other, unseen classes
    test/reference/<id>.jpg      photos of those classes plus one catalog image per class
    truth/query.csv              id,label (for scoring only)
    truth/reference.csv          id,label

:func:`write_set` writes any number of classes with any number of images each (bench/scale.py
writes the competition's size with it); :func:`make_demo` writes the demo set of the ``demo``
params into the demo's own folder, claimed by :data:`MARKER`. Ids are short hashes with a split
prefix (``t``/``q``/``r``), so no label leaks through a file name. Same arguments give
byte-identical files: each image has its own generator, seeded from (seed, split, class, index).
"""
from __future__ import annotations

import csv
import hashlib
import multiprocessing
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from retrieval.config import DemoParams
from retrieval.io import InputError, atomic_path
from synthetic.photos import render_catalog, render_photo, save_jpeg
from synthetic.products import class_design, seeded_rng

MARKER = "generated-by-demo.txt"  # claims a folder as the demo's own: only such a folder is rewritten
MARKER_TEXT = ("Written by the demo stage (python -m stages.demo), which replaces train/, test/ and truth/ "
               "here on each run: keep no data of your own in this folder.\n")
PARTS = ("train", "test", "truth")  # what make_demo replaces in its folder
_DEMO_CLASS, _DEMO_TRAIN_FILE = re.compile(r"product-\d+"), re.compile(r"t[0-9a-f]{12}\.jpg")


def class_name(index: int) -> str:
    """The label of class ``index``: ``product-00``, ``product-01``, .."""
    return f"product-{index:02d}"


def image_id(prefix: str, *parts: object) -> str:
    """An opaque id: ``prefix`` and 12 hex digits of a hash of ``parts``."""
    return prefix + hashlib.sha256(":".join(str(p) for p in ("demo-id", *parts)).encode()).hexdigest()[:12]


def write_class(out: str | Path, seed: int, size: int, index: int, n_train: int, n_query: int,
                n_ref: int) -> list[tuple[str, str, str]]:
    """Write class ``index``'s images under ``out``: ``n_train`` training photos, ``n_query`` query
    photos and ``n_ref`` references (the last of them the class's catalog image), ``size`` px;
    ``(split, id, label)`` of each."""
    design, label, rows = class_design(seed, index), class_name(index), []
    jobs = [("train", "t", k, Path(out) / "train" / label) for k in range(n_train)]
    jobs += [("query", "q", k, Path(out) / "test/query") for k in range(n_query)]
    jobs += [("reference", "r", k, Path(out) / "test/reference") for k in range(n_ref)]
    for split, prefix, k, folder in jobs:
        i = image_id(prefix, seed, split, index, k)
        catalog = split == "reference" and k == n_ref - 1
        im = render_catalog(design, size) if catalog else render_photo(design, seeded_rng(seed, split, index, k), size)
        folder.mkdir(parents=True, exist_ok=True)
        save_jpeg(im, folder / f"{i}.jpg")
        rows.append((split, i, label))
    return rows


def _class_task(task: tuple) -> list[tuple[str, str, str]]:
    return write_class(*task)


def write_set(out: str | Path, seed: int, size: int, plan: Sequence[tuple[int, int, int]],
              jobs: int = 1) -> dict[str, int]:
    """Write class ``c`` of ``plan`` (``plan[c]``: its training photos, query photos and references,
    as :func:`write_class` takes them) and truth/ under ``out``, in ``jobs`` processes (the bytes
    do not depend on it); the images written of each split (``train``, ``query``, ``reference``)."""
    out = Path(out)
    for part in ("train", "test/query", "test/reference", "truth"):
        (out / part).mkdir(parents=True, exist_ok=True)
    tasks = [(str(out), seed, size, c, *counts) for c, counts in enumerate(plan)]
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            rows = [r for chunk in pool.imap_unordered(_class_task, tasks, chunksize=4) for r in chunk]
    else:
        rows = [r for t in tasks for r in _class_task(t)]
    ids = [i for _, i, _ in rows]
    if len(set(ids)) != len(ids):  # 48-bit hashes: practically never, but never silently
        raise RuntimeError(f"{out}: two images drew one id")
    _write_truth(out / "truth", rows)
    return {s: sum(1 for r in rows if r[0] == s) for s in ("train", "query", "reference")}


def _write_truth(truth: Path, rows: list[tuple[str, str, str]]) -> None:
    """truth/query.csv and truth/reference.csv: id,label, sorted by id."""
    for split in ("query", "reference"):
        with atomic_path(truth / f"{split}.csv") as tmp, open(tmp, "w", newline="") as f:
            wr = csv.writer(f, lineterminator="\n")
            wr.writerow(["id", "label"])
            wr.writerows(sorted((i, label) for s, i, label in rows if s == split))


def demo_plan(p: DemoParams) -> list[tuple[int, int, int]]:
    """The demo set's classes as :func:`write_set` takes them: the training classes first, then the
    test classes, each with its query photos and its reference photos plus one catalog image."""
    return [(p.train_per_class, 0, 0)] * p.n_train_classes + \
        [(0, p.queries_per_class, p.photos_per_ref_class + 1)] * p.n_test_classes


def make_demo(out: str | Path, p: DemoParams) -> dict:
    """Write the demo set of ``p`` under ``out`` (replacing its :data:`PARTS`) and return counts.
    ``out`` must be the demo's own folder (:func:`check_demo_folder`); :data:`MARKER` claims it.
    Train classes are ``product-00`` ..; test classes continue the numbering, never in train/."""
    out = Path(out)
    check_demo_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / MARKER) as tmp:
        tmp.write_text(MARKER_TEXT)
    stage = Path(tempfile.mkdtemp(prefix=".demo-", dir=out))
    try:
        n = write_set(stage, p.seed, p.size, demo_plan(p))
        _swap_in(stage, out, PARTS)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"train_images": n["train"], "queries": n["query"], "references": n["reference"],
            "train_classes": p.n_train_classes, "test_classes": p.n_test_classes}


def _swap_in(stage: Path, out: Path, parts: tuple[str, ...]) -> None:
    """Replace ``out``'s ``parts`` by the staged ones: stale files from an earlier run never survive."""
    for part in parts:
        target = out / part
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        (stage / part).rename(target)


# -- the demo's own folder ------------------------------------------------------------------

def is_demo_root(root: str | Path, out: str | Path) -> bool:
    """Whether ``data.root`` (``root``) names the demo's folder ``out`` (the same path, links not followed)."""
    return os.path.normpath(os.path.abspath(root)) == os.path.normpath(os.path.abspath(out))


def check_demo_folder(out: Path) -> None:
    """Refuse to write into ``out`` unless it is the demo's own: absent, empty, or holding
    :data:`MARKER` (or a demo set written before the marker existed). Never through a link."""
    if out.is_symlink():
        raise InputError(f"{out}: a symbolic link (to {os.readlink(out)}); the demo stage never writes through "
                         "a link: remove the link, or point data.root at its target instead")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory; the demo stage leaves it as it is")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not _older_demo(out):
        raise InputError(f"{out}: holds files the demo stage did not write (no {MARKER}), left untouched: "
                         f"move your data elsewhere and point data.root at it, or remove {out} for the demo set")


def _older_demo(out: Path) -> bool:
    """A demo set written before :data:`MARKER`: train/, test/, truth/ only, demo class and file names."""
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    train = out / "train"
    if not names <= set(PARTS) or not train.is_dir() or train.is_symlink():
        return False
    classes = list(train.iterdir())
    return bool(classes) and all(_DEMO_CLASS.fullmatch(c.name) and c.is_dir() and not c.is_symlink()
                                 and all(_DEMO_TRAIN_FILE.fullmatch(f.name) for f in c.iterdir()) for c in classes)
