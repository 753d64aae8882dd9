"""One fold's feature extraction: the test queries and references and the fold's validation
images, with multi-scale / flip TTA and optional PCA whitening learned on training classes.

A fold's model may hold several backbones (``model.backbone`` a list): each embeds every image
and has its own whitening, and their embeddings are fused by weighted concatenation
(:mod:`retrieval.fusion`), the weights given (``extract.member_weights``) or chosen on the
fold's validation images: those of the classes the fold's models did not train on.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.config import ExtractParams
from retrieval.data import check_test_images, scan_test
from retrieval.embed import embed_tta
from retrieval.features import Features
from retrieval.fusion import concat_weighted, normalise_weights, weight_grid
from retrieval.search import validation_map
from retrieval.shards import embed_sharded, fingerprint
from retrieval.whiten import apply_whitening, fit_pca_whitening, whitening_dim

log = logging.getLogger(__name__)


def choose_member_weights(blocks: list[np.ndarray], roles: np.ndarray, labels: np.ndarray, step: float
                          ) -> tuple[list[float], list[dict]]:
    """The weights of :func:`retrieval.fusion.weight_grid` whose fusion of the validation
    ``blocks`` scores the best cosine mAP@1000 (ties: the most even weights), and every
    candidate's score."""
    table = []
    for w in weight_grid(len(blocks), step):
        m = validation_map(concat_weighted(blocks, w), roles, labels)
        table.append({"weights": list(w), "map@1000": m["map@1000"], "p@1": m["p@1"]})
    best = max(range(len(table)), key=lambda i: (table[i]["map@1000"], -i))
    return table[best]["weights"], table


def model_digest(model) -> str:
    """sha256 of a model's weights and buffers."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def extract_fold(xp: ExtractParams, root: str, folds: pd.DataFrame, fold: int, models: list[tuple],
                 work: str | Path | None = None) -> tuple[dict[str, Features], list, dict]:
    """Features of the ``query``, ``reference`` and ``valid`` sets, the whitening of each model
    (``(mean, projection)`` or None) and the metrics (images, images per second per set and
    backbone, empty queries, the member weights and how they were chosen).

    ``models`` is the fold's [(model, meta)], one per backbone. The whitening is learned on the
    images of the folds *other* than ``fold`` (the classes its models trained on), never on
    validation or test images, and applied to every set. An undecodable query
    (``bad_query: empty``) keeps its id with a zero row, listed in meta.

    With ``extract.shard_size`` > 0 and a ``work`` folder, each set is embedded in shards into a
    memory map under ``work/<backbone>/<set>`` (:mod:`retrieval.shards`), and a run killed part
    way continues from the last finished shard.
    """
    folds = folds.astype({"fold": str})
    valid = folds[folds["fold"] == str(fold)]
    sets = {"query": scan_test(root, "query"), "reference": scan_test(root, "reference"), "valid": valid}
    empty = check_test_images(root, sets["query"], sets["reference"], xp.bad_query)
    many = len(models) > 1
    whitenings, rates, blocks, members = [], {}, {name: [] for name in sets}, []
    for model, meta in models:
        tag = f" {meta['backbone']}" if many else ""
        digest = model_digest(model) if xp.shard_size and work is not None else ""

        def embed(images: list[str], desc: str) -> tuple[np.ndarray, float]:
            def run(chunk: list[str]) -> tuple[np.ndarray, float]:
                return embed_tta(model, meta, root, chunk, xp.image_size, xp.scales, xp.flip_tta, xp.batch_size,
                                 xp.num_workers, xp.amp, desc=desc + tag)
            if not (xp.shard_size and work is not None and images):
                return run(images)
            start = time.perf_counter()
            key = fingerprint(images, model=digest, root=str(root), image_size=xp.image_size, scales=xp.scales,
                              flip_tta=xp.flip_tta, amp=xp.amp)
            rows = embed_sharded(lambda chunk: run(chunk)[0], images,
                                 Path(work) / meta["backbone"] / desc.split()[-1], xp.shard_size, key, desc + tag)
            return rows, len(images) / max(time.perf_counter() - start, 1e-9)

        whitening, dim = None, meta["embedding_dim"]
        if xp.whiten_dim:
            train_images = folds.loc[folds["fold"] != str(fold), "image"].tolist()
            if len(train_images) < 2:
                raise ValueError(f"fold {fold}: PCA whitening needs at least 2 training-class images, "
                                 f"found {len(train_images)}; set extract.whiten_dim: 0")
            emb, rates["whiten_train" + tag.replace(" ", "/")] = embed(train_images, "extract whitening")
            dim = whitening_dim(xp.whiten_dim, len(train_images), meta["embedding_dim"])
            if dim < xp.whiten_dim:
                log.warning("fold %d: extract.whiten_dim %d reduced to %d: %d training-class images give a "
                            "covariance of rank %d at most", fold, xp.whiten_dim, dim, len(train_images), dim)
            whitening = fit_pca_whitening(emb, dim)
            log.info("fold %d%s: PCA whitening to %d dims learned on %d training-class images",
                     fold, tag, dim, len(train_images))
        whitenings.append(whitening)
        members.append({"backbone": meta["backbone"], "dim": dim})
        for name, df in sets.items():
            skip = df["id"].isin(empty).to_numpy() if name == "query" else np.zeros(len(df), bool)
            emb = np.zeros((len(df), dim), np.float32)
            e, rates[name + tag.replace(" ", "/")] = embed(df["image"][~skip].tolist(), f"extract {name}")
            emb[~skip] = apply_whitening(e, *whitening) if whitening is not None else e
            blocks[name].append(emb)

    chosen, table = "single backbone", []
    weights = [1.0]
    roles, labels = valid["role"].to_numpy(), valid["label"].to_numpy()
    if many:
        if xp.member_weights is not None:
            weights, chosen = normalise_weights(xp.member_weights, len(models)).tolist(), "extract.member_weights"
        else:
            weights, table = choose_member_weights(blocks["valid"], roles, labels, xp.member_weight_step)
            chosen = f"best validation cosine mAP@1000 of {len(table)} candidates"
        log.info("fold %d: member weights %s (%s)", fold,
                 ", ".join(f"{m['backbone']} {w:.2f}" for m, w in zip(members, weights)), chosen)
    info = {"fold": fold, "backbone": "+".join(m["backbone"] for m in members), "members": members,
            "member_weights": weights, "image_size": xp.image_size, "flip_tta": xp.flip_tta,
            "scales": list(xp.scales), "amp": xp.amp,
            # every backbone's whitening has the same (capped) dimension: one embedding_dim, one sample
            "whiten_dim": members[0]["dim"] if whitenings[0] is not None else 0}
    feats = {}
    for name, df in sets.items():
        extra = {"empty_queries": empty} if name == "query" else {}
        feats[name] = Features(df["id"], concat_weighted(blocks[name], weights), df.get("label"), df.get("role"),
                               {**info, **extra})
    metrics = {"images": int(sum(len(d) for d in sets.values())), "empty_queries": len(empty),
               "img_per_s": {k: round(v, 2) for k, v in rates.items()}}
    if many:
        metrics["member_weights"] = {m["backbone"]: w for m, w in zip(members, weights)}
        metrics["member_weights_chosen_by"] = chosen
        metrics["member_weight_candidates"] = table
        metrics["valid_map@1000_by_member"] = {
            m["backbone"]: validation_map(b, roles, labels)["map@1000"] for m, b in zip(members, blocks["valid"])}
    return feats, whitenings, metrics
