"""One fold's feature extraction: the test queries and references and the fold's validation
images, with multi-scale / flip TTA and optional PCA whitening learned on training classes.

A fold's model may hold several backbones (``model.backbone`` a list): each embeds every image
and has its own whitening, and their embeddings are fused by weighted concatenation
(:mod:`retrieval.embed.members`), the weights given (``extract.member_weights``) or chosen on
the fold's validation images: those of the classes the fold's models did not train on.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.config import ExtractParams
from retrieval.data.folds import ROLE, fold_parts
from retrieval.data.images import ID, IMAGE, LABEL, check_test_images, scan_test
from retrieval.embed.backbone_fusion import choose_member_weights, concat_weighted, normalise_weights
from retrieval.embed.feature_file import Features
from retrieval.embed.members import Whitening, member_blocks
from retrieval.embed.shards import embed_sharded, fingerprint
from retrieval.embed.tta import embed_tta
from retrieval.embed.whitening import fit_pca_whitening, whitening_dim
from retrieval.metrics import MAP
from retrieval.model.checkpoints import model_fingerprint, weights_fingerprint
from retrieval.validation_metrics import validation_map

log = logging.getLogger(__name__)


class _Member:
    """One backbone of the fold's model, embedding image lists as ``extract`` params say: in
    memory, or in resumable shards under ``work/<backbone>/<set>``; images per second in ``rates``."""

    def __init__(self, xp: ExtractParams, root: str, model, meta: dict, work: str | Path | None,
                 rates: dict, many: bool):
        self.xp, self.root, self.model, self.meta, self.rates = xp, root, model, meta, rates
        self.work = Path(work) if xp.shard_size and work is not None else None
        self.tag = f" {meta['backbone']}" if many else ""
        self.digest = weights_fingerprint(model) if self.work is not None else ""

    def _run(self, images: list[str], desc: str) -> np.ndarray:
        xp = self.xp
        return embed_tta(self.model, self.meta, self.root, images, xp.image_size, xp.scales, xp.flip_tta,
                         xp.batch_size, xp.num_workers, xp.amp, desc=desc + self.tag, runtime=xp.runtime)[0]

    def embed(self, images: list[str], name: str) -> np.ndarray:
        """Embeddings of ``images``, the set ``name`` (``query``, ..., ``whiten_train``)."""
        xp, desc, start = self.xp, f"extract {'whitening' if name == 'whiten_train' else name}", time.perf_counter()
        if self.work is None or not images:
            rows = self._run(images, desc)
        else:
            key = fingerprint(images, model=self.digest, root=str(self.root), image_size=xp.image_size,
                              scales=xp.scales, flip_tta=xp.flip_tta, amp=xp.amp, **_runtime(xp))
            rows = embed_sharded(lambda chunk: self._run(chunk, desc), images,
                                 self.work / self.meta["backbone"] / desc.split()[-1], xp.shard_size, key, desc + self.tag)
        self.rates[name + self.tag.replace(" ", "/")] = len(images) / max(time.perf_counter() - start, 1e-9)
        return rows


def _runtime(xp: ExtractParams) -> dict:
    """``{"runtime": ...}`` for meta and shard keys, empty for torch (its outputs stay as they were)."""
    return {"runtime": xp.runtime} if xp.runtime != "torch" else {}


def _fit_whitening(xp: ExtractParams, fold: int, train_images: list[str], member: _Member) -> tuple[Whitening, int]:
    """The member's PCA whitening learned on the fold's training-class images, and its dimension
    (None and the embedding dimension with ``whiten_dim`` 0)."""
    if not xp.whiten_dim:
        return None, member.meta["embedding_dim"]
    if len(train_images) < 2:
        raise ValueError(f"fold {fold}: PCA whitening needs at least 2 training-class images, "
                         f"found {len(train_images)}; set extract.whiten_dim: 0")
    emb = member.embed(train_images, "whiten_train")
    dim = whitening_dim(xp.whiten_dim, len(train_images), member.meta["embedding_dim"])
    if dim < xp.whiten_dim:
        log.warning("fold %d: extract.whiten_dim %d reduced to %d: %d training-class images give a "
                    "covariance of rank %d at most", fold, xp.whiten_dim, dim, len(train_images), dim)
    log.info("fold %d%s: PCA whitening to %d dims learned on %d training-class images",
             fold, member.tag, dim, len(train_images))
    return fit_pca_whitening(emb, dim, power=xp.whiten_power), dim


def _set_blocks(members: list[_Member], whitenings: list, dims: list[int], df: pd.DataFrame, name: str,
                skip: np.ndarray) -> list[np.ndarray]:
    """Each member's whitened block of a set; the ``skip`` rows (undecodable queries) stay zero."""
    images = df[IMAGE][~skip].tolist()
    blocks = []
    for block, dim in zip(member_blocks(members, whitenings, lambda m: m.embed(images, name)), dims):
        emb = np.zeros((len(df), dim), np.float32)
        emb[~skip] = block
        blocks.append(emb)
    return blocks


def _weights(xp: ExtractParams, fold: int, backbones: list[str], valid_blocks: list[np.ndarray],
             valid: pd.DataFrame) -> tuple[list[float], str, list[dict]]:
    """The member weights, how they were chosen, and the candidates' table (empty unless chosen)."""
    if len(backbones) == 1:
        return [1.0], "single backbone", []
    if xp.member_weights is not None:
        weights, chosen, table = normalise_weights(xp.member_weights, len(backbones)).tolist(), "extract.member_weights", []
    else:
        weights, table = choose_member_weights(valid_blocks, valid[ROLE].to_numpy(), valid[LABEL].to_numpy(),
                                               xp.member_weight_step)
        chosen = f"best validation cosine mAP@1000 of {len(table)} candidates"
    log.info("fold %d: member weights %s (%s)", fold, ", ".join(f"{b} {w:.2f}" for b, w in zip(backbones, weights)), chosen)
    return weights, chosen, table


def extract_fold(xp: ExtractParams, root: str, folds: pd.DataFrame, fold: int, models: list[tuple],
                 work: str | Path | None = None, data_listing: str | None = None
                 ) -> tuple[dict[str, Features], list, dict]:
    """Features of the ``query``, ``reference`` and ``valid`` sets, the whitening of each model
    (``(mean, projection)`` or None) and the metrics (images, images per second per set and
    backbone, empty queries, the member weights and how they were chosen).

    ``models`` is the fold's [(model, meta)], one per backbone. The whitening is learned on the
    images of the folds *other* than ``fold`` (the classes its models trained on), never on
    validation or test images, and applied to every set. An undecodable query
    (``bad_query: empty``) keeps its id with a zero row, listed in meta.

    With ``extract.shard_size`` > 0 and a ``work`` folder, each set is embedded in shards into a
    memory map under ``work/<backbone>/<set>`` (:mod:`retrieval.embed.shards`), and a run killed
    part way continues from the last finished shard.

    Each file's meta records the fingerprint of the models (``model_fingerprint``) and the
    ``data_listing`` digest of the data it was made from (:func:`retrieval.data.images.data_unchanged`).
    """
    train, valid = fold_parts(folds, fold)
    sets = {"query": scan_test(root, "query"), "reference": scan_test(root, "reference"), "valid": valid}
    empty = check_test_images(root, sets["query"], sets["reference"], xp.bad_query)
    rates: dict[str, float] = {}
    members = [_Member(xp, root, model, meta, work, rates, len(models) > 1) for model, meta in models]
    whitenings, dims = zip(*[_fit_whitening(xp, fold, train[IMAGE].tolist(), m) for m in members])
    blocks = {name: _set_blocks(members, whitenings, dims, df, name, df[ID].isin(empty).to_numpy() if name == "query"
                                else np.zeros(len(df), bool)) for name, df in sets.items()}
    backbones = [meta["backbone"] for _, meta in models]
    weights, chosen, table = _weights(xp, fold, backbones, blocks["valid"], valid)
    info = {"fold": fold, "backbone": "+".join(backbones), "model_fingerprint": model_fingerprint(models),
            "data_listing": data_listing, **_made_with(xp, backbones, dims, whitenings[0] is not None),
            "member_weights": weights}
    feats = {name: Features(df[ID], concat_weighted(blocks[name], weights), df.get(LABEL), df.get(ROLE),
                            {**info, **({"empty_queries": empty} if name == "query" else {})})
             for name, df in sets.items()}
    metrics = {"images": int(sum(len(d) for d in sets.values())), "empty_queries": len(empty),
               "img_per_s": {k: round(v, 2) for k, v in rates.items()}}
    if len(models) > 1:
        metrics.update(member_weights=dict(zip(backbones, weights)), member_weights_chosen_by=chosen,
                       member_weight_candidates=table, **_member_maps(backbones, blocks["valid"], valid))
    return feats, list(whitenings), metrics


def _made_with(xp: ExtractParams, backbones: list[str], dims: list[int], whitened: bool) -> dict:
    """The extract settings a feature file's meta records (its fingerprint covers them)."""
    return {"members": [{"backbone": b, "dim": dim} for b, dim in zip(backbones, dims)],
            "image_size": xp.image_size, "flip_tta": xp.flip_tta, "scales": list(xp.scales), "amp": xp.amp,
            **_runtime(xp),
            # every backbone's whitening has the same (capped) dimension: one embedding_dim, one sample
            "whiten_dim": dims[0] if whitened else 0, "whiten_power": xp.whiten_power}


def _member_maps(backbones: list[str], valid_blocks: list[np.ndarray], valid: pd.DataFrame) -> dict:
    """Each backbone's validation cosine mAP@1000 alone, for the metrics."""
    roles, labels = valid[ROLE].to_numpy(), valid[LABEL].to_numpy()
    return {f"valid_{MAP}_by_member": {b: validation_map(block, roles, labels)[MAP]
                                       for b, block in zip(backbones, valid_blocks)}}
