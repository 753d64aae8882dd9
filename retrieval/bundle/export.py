"""Making a bundle from the pipeline's outputs (the ``bundle`` stage; this module needs torch,
the bundle's readers do not): each fold's models exported to ONNX, their whitening, the
reference features, thumbnails of the reference images, and the settings to use them with.

Only the online re-ranking steps go in (``dba``: applied to the references when the bundle is
written; ``qe``: to each query): diffusion and k-reciprocal re-ranking rank all the queries
together, offline, and are left out (listed in settings.json, ``offline_steps_left_out``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.bundle.edit import thumbnail_jpeg
from retrieval.bundle.layout import Parts, model_file
from retrieval.bundle.onnx_model import onnx_bytes
from retrieval.config import Params
from retrieval.data.images import ID, IMAGE, load_image, scan_test
from retrieval.embed.feature_file import Features
from retrieval.embed.tta import tta_sizes
from retrieval.io import InputError

log = logging.getLogger(__name__)
ONLINE_STEPS = ("dba", "qe")
MAX_BATCH = 32  # images per forward at most when the bundle embeds (a search's TTA views, an add)


def rerank_settings(params: Params) -> dict:
    """The online part of ``rerank`` (steps dba and qe, in params order) and what was left out."""
    rp = params.rerank
    online = [s for s in rp.steps if s in ONLINE_STEPS]
    left_out = [s for s in rp.steps if s not in ONLINE_STEPS]
    if left_out:
        log.info("bundle: re-ranking steps %s are offline (all queries at once): not in the bundle", left_out)
    return {"steps": online, "dba": rp.dba.model_dump(), "qe": rp.qe.model_dump(), "k": rp.k,
            "index": rp.index.model_dump(), "offline_steps_left_out": left_out}


def fold_settings(fold: int, weight: float, models: list[tuple], refs: Features) -> dict:
    """A fold's entry in settings.json."""
    return {"fold": fold, "weight": weight, "dim": int(refs.embeddings.shape[1]),
            "member_weights": refs.meta.get("member_weights", [1.0] * len(models)),
            "members": [{"backbone": meta["backbone"], "onnx": model_file(fold, i), "mean": list(meta["mean"]),
                         "std": list(meta["std"])} for i, (_, meta) in enumerate(models)]}


def whitening_arrays(fold: int, whitenings: list) -> dict[str, np.ndarray]:
    return {f"fold{fold}_member{i}_{name}": a for i, w in enumerate(whitenings) if w is not None
            for name, a in zip(("mean", "projection"), w)}


def reference_thumbnails(root: str | Path, ids: Sequence[str]):
    """(id, JPEG) of each reference image under ``root``/test/reference, in ``ids`` order."""
    table = scan_test(root, "reference")
    images = dict(zip(table[ID], table[IMAGE]))
    missing = [i for i in ids if i not in images]
    if missing:
        raise InputError(f"{Path(root) / 'test' / 'reference'}: no image of reference {missing[0]!r} "
                         f"({len(missing)} missing): the features were made from other data")
    for i in ids:
        yield i, thumbnail_jpeg(load_image(Path(root) / images[i]))


def bundle_parts(params: Params, folds: dict[int, tuple[list, list, Features]]) -> Parts:
    """The :class:`Parts` of a bundle: ``folds`` maps each fold to its ``[(model, meta)]``, its
    whitenings and its reference features (one set of reference ids for every fold)."""
    weights = params.ensemble.fold_weights or [1.0] * len(folds)
    first = next(iter(folds.values()))[2]
    for fold, (_, _, refs) in folds.items():
        if not np.array_equal(refs.ids, first.ids):
            raise InputError(f"fold {fold}: its reference ids differ from fold {next(iter(folds))}'s; re-run extract")
    m = first.meta
    settings = {"folds": [fold_settings(f, w, models, refs) for (f, (models, _, refs)), w in zip(folds.items(), weights)],
                "image_size": m["image_size"], "scales": m.get("scales", [1.0]), "flip_tta": m["flip_tta"],
                "tta_sizes": tta_sizes(m["image_size"], m.get("scales", [1.0])), "references_amp": m.get("amp"),
                "batch_size": min(params.extract.batch_size, MAX_BATCH), "rerank": rerank_settings(params)}
    models = {model_file(f, i): onnx_bytes(model) for f, (ms, _, _) in folds.items() for i, (model, _) in enumerate(ms)}
    whitening = {k: v for f, (_, ws, _) in folds.items() for k, v in whitening_arrays(f, ws).items()}
    return Parts(settings, params.model_dump(mode="json"), models, whitening, first.ids.tolist(),
                 {f: refs.embeddings for f, (_, _, refs) in folds.items()},
                 reference_thumbnails(params.data.root, first.ids.tolist()))
