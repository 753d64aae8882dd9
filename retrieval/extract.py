"""One fold's feature extraction: the test queries and references and the fold's validation
images, with multi-scale / flip TTA and optional PCA whitening learned on training classes."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from retrieval.config import ExtractParams
from retrieval.data import check_test_images, scan_test
from retrieval.embed import embed_tta
from retrieval.features import Features
from retrieval.whiten import apply_whitening, fit_pca_whitening, whitening_dim

log = logging.getLogger(__name__)


def extract_fold(xp: ExtractParams, root: str, folds: pd.DataFrame, fold: int, model, meta: dict
                 ) -> tuple[dict[str, Features], tuple[np.ndarray, np.ndarray] | None, dict]:
    """Features of the ``query``, ``reference`` and ``valid`` sets, the whitening (or None), and
    the metrics (images, images per second per set, empty queries).

    The whitening is learned on the images of the folds *other* than ``fold`` (the classes its
    model trained on), never on validation or test images, and applied to every set.
    An undecodable query (``bad_query: empty``) keeps its id with a zero row, listed in meta.
    """
    folds = folds.astype({"fold": str})
    valid = folds[folds["fold"] == str(fold)]
    sets = {"query": scan_test(root, "query"), "reference": scan_test(root, "reference"), "valid": valid}
    empty = check_test_images(root, sets["query"], sets["reference"], xp.bad_query)
    info = {"fold": fold, "backbone": meta["backbone"], "image_size": xp.image_size, "flip_tta": xp.flip_tta,
            "scales": list(xp.scales), "whiten_dim": xp.whiten_dim, "amp": xp.amp}

    def embed(images: list[str], desc: str) -> tuple[np.ndarray, float]:
        return embed_tta(model, meta, root, images, xp.image_size, xp.scales, xp.flip_tta, xp.batch_size,
                         xp.num_workers, xp.amp, desc=desc)

    whitening, rates, feats, dim = None, {}, {}, meta["embedding_dim"]
    if xp.whiten_dim:
        train_images = folds.loc[folds["fold"] != str(fold), "image"].tolist()
        if len(train_images) < 2:
            raise ValueError(f"fold {fold}: PCA whitening needs at least 2 training-class images, "
                             f"found {len(train_images)}; set extract.whiten_dim: 0")
        emb, rates["whiten_train"] = embed(train_images, "extract whitening")
        dim = whitening_dim(xp.whiten_dim, len(train_images), meta["embedding_dim"])
        if dim < xp.whiten_dim:
            log.warning("fold %d: extract.whiten_dim %d reduced to %d: %d training-class images give a "
                        "covariance of rank %d at most", fold, xp.whiten_dim, dim, len(train_images), dim)
        whitening = fit_pca_whitening(emb, dim)
        log.info("fold %d: PCA whitening to %d dims learned on %d training-class images",
                 fold, dim, len(train_images))
    info["whiten_dim"] = dim if whitening is not None else 0
    for name, df in sets.items():
        skip = df["id"].isin(empty).to_numpy() if name == "query" else np.zeros(len(df), bool)
        emb = np.zeros((len(df), dim), np.float32)
        e, rates[name] = embed(df["image"][~skip].tolist(), f"extract {name}")
        emb[~skip] = apply_whitening(e, *whitening) if whitening is not None else e
        extra = {"empty_queries": empty} if name == "query" else {}
        feats[name] = Features(df["id"], emb, df.get("label"), df.get("role"), {**info, **extra})
    metrics = {"images": int(sum(len(d) for d in sets.values())), "empty_queries": len(empty),
               "img_per_s": {k: round(v, 2) for k, v in rates.items()}}
    return feats, whitening, metrics
