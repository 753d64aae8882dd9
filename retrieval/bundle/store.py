"""A bundle opened for search: :class:`Bundle`. Torch is not imported (a test checks it):
the models run in ONNX Runtime, the references are searched in faiss.

A search embeds each image with each fold's models (:mod:`retrieval.bundle.embedder`), runs the
online re-ranking the bundle holds (alpha-QE of the query against the references, which were
DBA-augmented when the bundle was written: :func:`retrieval.rank.chain.rank`'s ``dba`` and
``qe`` steps), takes each fold's top ``rerank.k`` and fuses the folds as the ensemble stage does
(:func:`retrieval.rank.fold_fusion.fuse_rankings`). The score given with a reference is the
folds' weighted mean cosine, a reference missing from a fold's list counting that list's lowest
score: the fused score plus a constant per query, so the order is the ensemble's.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
from PIL import Image

from retrieval.bundle.embedder import FoldModel, Member, embed_folds
from retrieval.bundle.onnx_model import onnx_session
from retrieval.bundle.layout import REFERENCES, SETTINGS, THUMBNAILS, WHITENING, index_file, load_arrays
from retrieval.bundle.manifest import check_manifest
from retrieval.bundle.preprocess import image_array
from retrieval.io import InputError
from retrieval.rank.expansion import expand
from retrieval.rank.fold_fusion import fuse_rankings
from retrieval.rank.knn import search_index


def whitening_of(arrays: dict, fold: int, member: int):
    """The (mean, projection) of a fold's member in whitening.npz, or None (no whitening)."""
    key = f"fold{fold}_member{member}"
    return (arrays[f"{key}_mean"], arrays[f"{key}_projection"]) if f"{key}_mean" in arrays else None


def fold_model(folder: Path, settings: dict, fold: dict, whitenings: dict, threads: int | None = None) -> FoldModel:
    """The :class:`FoldModel` of one fold's entry of settings.json."""
    members = [Member(onnx_session(folder / m["onnx"], threads), m["mean"], m["std"],
                      whitening_of(whitenings, fold["fold"], i)) for i, m in enumerate(fold["members"])]
    return FoldModel(members, fold["member_weights"], settings["tta_sizes"], settings["flip_tta"],
                     settings["batch_size"])


class Bundle:
    """An exported pipeline: :meth:`open` it, then :meth:`search` images against its references."""

    def __init__(self, path: Path, settings: dict, ids: list[str], db: dict[int, np.ndarray],
                 indexes: dict, models: dict[int, FoldModel]):
        self.path, self.settings, self._ids = path, settings, ids
        self.db, self.indexes, self.models = db, indexes, models
        self._thumbs = zipfile.ZipFile(path / THUMBNAILS)  # held open: a later swap of the folder does not pull it away
        self._thumb_names = set(self._thumbs.namelist())

    @classmethod
    def open(cls, path: str | Path, threads: int | None = None) -> "Bundle":
        """Open the bundle at ``path`` once its manifest checks (format version, every file's
        sha256); ``threads``: ONNX Runtime's threads per session (default: the usable cores)."""
        path = Path(path)
        check_manifest(path)
        try:
            settings = json.loads((path / SETTINGS).read_text())
            refs, whitenings = load_arrays(path / REFERENCES), load_arrays(path / WHITENING)
            folds = [f["fold"] for f in settings["folds"]]
            db = {f: refs[f"db_fold{f}"] for f in folds}
            indexes = {f: faiss.read_index(str(path / index_file(f))) for f in folds}
            models = {f["fold"]: fold_model(path, settings, f, whitenings, threads) for f in settings["folds"]}
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"{path}: its files do not make a bundle ({type(err).__name__}: {err})") from None
        return cls(path, settings, refs["ids"].tolist(), db, indexes, models)

    def close(self) -> None:
        """Release the thumbnails file (the bundle is unusable for thumbnails after)."""
        self._thumbs.close()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def ids(self) -> list[str]:
        """The reference ids, in index order."""
        return list(self._ids)

    def thumbnail(self, ref_id: str) -> bytes | None:
        """The reference's small JPEG, or None when the bundle holds none for it."""
        name = f"{ref_id}.jpg"
        return self._thumbs.read(name) if name in self._thumb_names else None

    def embed(self, images: Sequence[Image.Image]) -> dict[int, np.ndarray]:
        """Each fold's [N, D] embedding of the images (after its whitening and member fusion)."""
        arrays = [image_array(im, f"image {i}") for i, im in enumerate(images)]
        return embed_folds(self.models, arrays)

    def fold_ranking(self, fold: int, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One fold's top-``k`` (scores, indices) of embedded queries, after alpha-QE if the
        bundle's steps hold it."""
        rr, index = self.settings["rerank"], self.indexes[fold]
        if "qe" in rr["steps"] and rr["qe"]["k"] > 0:
            queries = expand(queries, self.db[fold], *search_index(index, queries, rr["qe"]["k"]), rr["qe"]["alpha"])
        return search_index(index, queries, k)

    def search(self, images: Sequence[Image.Image], k: int) -> list[list[tuple[str, float]]]:
        """The top-``k`` (reference id, score) of each image, best first (scores: see the module)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        return self.search_embedded(self.embed(images), k) if images else []

    def search_embedded(self, embedded: dict[int, np.ndarray], k: int) -> list[list[tuple[str, float]]]:
        """:meth:`search` of images already embedded (:meth:`embed`)."""
        per_fold = self.settings["rerank"]["k"]
        weights = [f["weight"] for f in self.settings["folds"]]
        scores, indices = zip(*[self.fold_ranking(f, q, max(per_fold, k)) for f, q in embedded.items()])
        fused_s, fused_i = fuse_rankings(scores, indices, len(self._ids), min(k, len(self._ids)), weights)
        floors = sum(w * np.where(i >= 0, s, np.inf).min(axis=1) for w, s, i in zip(weights, scores, indices))
        fused_s = (fused_s.astype(np.float64) + floors[:, None]) / sum(weights)
        return [[(self._ids[i], float(s)) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(fused_s, fused_i)]
