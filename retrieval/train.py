"""Training one fold: margin-head metric learning with validation mAP@1000 every epoch."""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from retrieval.config import Params
from retrieval.data import ImageDataset, make_loader, train_transform
from retrieval.embed import embed_images
from retrieval.io import atomic_path
from retrieval.metrics import retrieval_metrics
from retrieval.model import (autocast_dtype, build_model, freeze_stages, margin_loss,
                             save_checkpoint, set_train_mode)
from retrieval.search import knn

log = logging.getLogger(__name__)


def lr_factor(step: int, total_steps: int, warmup_steps: int, floor: float = 0.01) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``floor`` at the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def evaluate(model, meta: dict, root: str, valid: pd.DataFrame, image_size: int, batch_size: int,
             num_workers: int, amp: str, k: int = 1000) -> dict:
    """mAP@k and P@1 of the fold's validation queries against its validation references."""
    emb, rate = embed_images(model, meta, root, valid["image"].tolist(), image_size, batch_size,
                             num_workers=num_workers, amp=amp, desc="validate")
    q = (valid["role"] == "query").to_numpy()
    _, idx = knn(emb[q], emb[~q], k)
    labels = valid["label"].to_numpy()
    return retrieval_metrics(idx, labels[q], labels[~q], k)


def train_fold(params: Params, folds: pd.DataFrame, root: str, fold: int, model_path: str | Path,
               history_path: str | Path) -> dict:
    """Train the model of ``fold`` on the other folds' classes; write the checkpoint and history.

    The checkpoint kept is the epoch with the best validation mAP@1000 (epoch 0 is the
    pretrained model before any step, the reference point).
    """
    tp, mp = params.train, params.model
    seed = params.seed + fold
    seed_everything(seed)
    torch.set_num_threads(tp.threads or os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    train_df = folds[folds["fold"] != fold].reset_index(drop=True)
    valid_df = folds[folds["fold"] == fold].reset_index(drop=True)
    classes = sorted(train_df["label"].unique())
    targets = train_df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()

    model, meta = build_model(mp)
    meta.update(fold=fold, classes=len(classes), image_size=tp.image_size)
    frozen = freeze_stages(model, tp.freeze_stages)
    model.to(device)
    if tp.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = margin_loss(mp.head, len(classes), mp.embedding_dim, mp.margin, mp.scale).to(device)

    ds = ImageDataset(root, train_df["image"], targets, train_transform(tp.image_size, meta["mean"], meta["std"], seed))
    drop_last = len(ds) > tp.batch_size
    loader = make_loader(ds, tp.batch_size, shuffle=True, num_workers=tp.num_workers, seed=seed, drop_last=drop_last)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * tp.epochs
    warmup = int(round(tp.warmup_epochs * steps_per_epoch))
    opt = torch.optim.AdamW(
        [{"params": [p for p in model.parameters() if p.requires_grad], "lr": tp.lr},
         {"params": list(loss_fn.parameters()), "lr": tp.head_lr}],
        weight_decay=tp.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup))
    dtype = autocast_dtype(tp.amp, device)

    def validate() -> dict:
        return evaluate(model, meta, root, valid_df, tp.val_image_size, tp.batch_size * 2,
                        tp.num_workers, tp.amp)

    history = []
    m0 = validate()
    history.append({"epoch": 0, "train_loss": float("nan"), "lr": 0.0, "val_map@1000": m0["map@1000"],
                    "val_p@1": m0["p@1"], "seconds": 0.0, "train_img_per_s": float("nan")})
    best = {"epoch": 0, **m0}
    save_checkpoint(model_path, model, {**meta, "epoch": 0, "val_map@1000": m0["map@1000"]})
    log.info("fold %d: %d classes, %d training images, %d validation images; epoch 0 val mAP@1000 %.4f",
             fold, len(classes), len(ds), len(valid_df), m0["map@1000"])

    step = 0
    for epoch in range(1, tp.epochs + 1):
        set_train_mode(model, frozen)
        start, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(loader, desc=f"fold {fold} epoch {epoch}/{tp.epochs}", unit="batch", disable=None, leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if tp.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                emb = model(x)
            loss = loss_fn(emb.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fold {fold} epoch {epoch} step {step}: loss is {loss.item()}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(x)
            loss_sum += loss.item() * len(x)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        train_s = time.perf_counter() - start
        m = validate()
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "lr": opt.param_groups[0]["lr"],
               "val_map@1000": m["map@1000"], "val_p@1": m["p@1"],
               "seconds": time.perf_counter() - start, "train_img_per_s": seen / max(train_s, 1e-9)}
        history.append(row)
        log.info("fold %d epoch %d: loss %.4f, val mAP@1000 %.4f, P@1 %.4f, %.1f img/s",
                 fold, epoch, row["train_loss"], m["map@1000"], m["p@1"], row["train_img_per_s"])
        if m["map@1000"] > best["map@1000"]:
            best = {"epoch": epoch, **m}
            save_checkpoint(model_path, model, {**meta, "epoch": epoch, "val_map@1000": m["map@1000"]})

    hist = pd.DataFrame(history)
    with atomic_path(history_path) as tmp:
        hist.to_csv(tmp, index=False, float_format="%.6g")
    trained = hist[hist["epoch"] > 0]
    return {
        "best_epoch": int(best["epoch"]),
        "val_map@1000": float(best["map@1000"]),
        "val_p@1": float(best["p@1"]),
        "epoch0_val_map@1000": float(m0["map@1000"]),
        "train_images": int(len(ds)),
        "train_classes": int(len(classes)),
        "valid_images": int(len(valid_df)),
        "train_img_per_s": float(trained["train_img_per_s"].mean()) if len(trained) else 0.0,
        "seconds": float(hist["seconds"].sum()),
    }
