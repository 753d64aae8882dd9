"""Query time: embedding new images with the fold models and searching the saved references
(the ``search`` command), as the pipeline would rank them."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.config import Params
from retrieval.data.images import IMAGE_EXTENSIONS, check_images
from retrieval.embed.feature_file import check_made_by, load_features
from retrieval.embed.members import embed_members
from retrieval.embed.tta import embed_tta
from retrieval.embed.whitening import load_whitening
from retrieval.io import InputError
from retrieval.model.checkpoints import model_fingerprint, models_from_checkpoint
from retrieval.rank.fold_fusion import fuse_rankings
from retrieval.rank.chain import rank

log = logging.getLogger(__name__)


def list_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, or found (sorted, not recursively) in named directories; a
    directory's entry with an image name that is not a file (a folder ``x.jpg``) is skipped,
    counted in the log, as the pipeline's scans skip it."""
    out: list[Path] = []
    not_files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            named = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
            out += [f for f in named if f.is_file()]
            not_files += [f for f in named if not f.is_file()]
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or directory")
    if not_files:
        log.warning("%d entries skipped, not files, e.g. %s", len(not_files), not_files[0])
    if not out:
        raise InputError(f"no images found in {', '.join(map(str, paths))}")
    return out


def decodable(images: Sequence[Path], bad_images: str) -> list[Path]:
    """``images`` that decode. An undecodable one is an error naming it, or with ``bad_images``
    ``skip``, left out and logged (so one bad file does not abort a search of thousands)."""
    bad = check_images("/", [str(p.resolve()) for p in images])
    if bad and bad_images != "skip":
        raise InputError(f"{len(bad)} undecodable image(s); first: {next(iter(bad.values()))} "
                         "(--bad-images skip leaves them out)")
    for reason in bad.values():
        log.warning("skipped: %s", reason)
    good = [p for p in images if str(p.resolve()) not in bad]
    if bad:
        log.warning("%d of %d images skipped as undecodable", len(bad), len(images))
    if not good:
        raise InputError("no decodable image to search with")
    return good


def search_images(images: Sequence[Path], params: Params, model_pattern: str, reference_pattern: str,
                  whitening_pattern: str, top: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused top-``top`` (reference ids, scores) of each image over the folds' models.

    Each fold's model (each of its backbones) embeds the images with the preprocessing its
    reference features were made with (image size, scales and flip TTA and the backbones'
    weights, read from the feature file, and the fold's whitening file), the configured re-ranking
    runs against that fold's references, and the folds are fused as the ensemble stage does.
    A fold's model that did not make its reference features (retrained since) is refused.
    """
    scores, indices, ref_ids = [], [], None
    for fold in params.cv.folds:
        paths = {"model": model_pattern.format(fold=fold), "reference": reference_pattern.format(fold=fold),
                 "whitening": whitening_pattern.format(fold=fold)}
        refs, models, whitenings = _fold_files(paths)
        if ref_ids is not None and not np.array_equal(refs.ids, ref_ids):
            raise InputError(f"{paths['reference']}: reference ids differ between folds")
        ref_ids = refs.ids
        emb = _embed_new(images, models, whitenings, refs.meta, params.extract.batch_size, fold)
        if emb.shape[1] != refs.embeddings.shape[1]:
            raise InputError(f"{paths['reference']}: {refs.embeddings.shape[1]}-d references, "
                             f"but the model and whitening give {emb.shape[1]}-d embeddings")
        s, i = rank(emb, refs.embeddings, params.rerank, max(top, params.rerank.k))
        scores.append(s)
        indices.append(i)
    fused_s, fused_i = fuse_rankings(scores, indices, len(ref_ids), top, params.ensemble.fold_weights)
    return ref_ids, fused_s, fused_i


def _fold_files(paths: dict[str, str]) -> tuple:
    """A fold's reference features, its models (refused unless they made those features) and
    their whitenings (one per backbone)."""
    refs = load_features(paths["reference"])
    models = models_from_checkpoint(paths["model"])
    check_made_by(refs, paths["reference"], model_fingerprint(models), paths["model"])
    whitenings = load_whitening(paths["whitening"])
    if len(whitenings) != len(models):
        raise InputError(f"{paths['whitening']}: {len(whitenings)} whitenings for {len(models)} backbones in "
                         f"{paths['model']}; re-run extract")
    return refs, models, whitenings


def _embed_new(images: Sequence[Path], models: list, whitenings: list, made: dict, batch_size: int,
               fold: int) -> np.ndarray:
    """The images' fused embedding by a fold's models, made as the fold's reference features were
    (``made``: their meta, which records the TTA, precision, runtime and member weights)."""
    files = [str(p.resolve()) for p in images]

    def embed(member: tuple) -> np.ndarray:
        model, meta = member
        desc = f"embed fold {fold}" + (f" {meta['backbone']}" if len(models) > 1 else "")
        return embed_tta(model, meta, "/", files, made["image_size"], made["scales"], made["flip_tta"], batch_size,
                         0, made["amp"], made.get("runtime", "torch"), desc)[0]  # extract records runtime unless torch
    return embed_members(models, whitenings, made["member_weights"], embed)
