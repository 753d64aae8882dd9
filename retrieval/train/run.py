"""One backbone's run on one fold (:class:`Run`): the seeded model and loss, the training loader
and the optimiser, and what a run does with them: an epoch's pass over the training batches, a
validation, its state for a resume."""
from __future__ import annotations

import copy
import logging
import random

import numpy as np
import torch
from tqdm import tqdm

from retrieval.data.folds import IMAGE, LABEL, check_fold_validates, fold_parts
from retrieval.data.loaders import ImageDataset, train_loader, train_transform
from retrieval.io import InputError
from retrieval.model.losses import metric_loss
from retrieval.model.network import autocast_dtype, build_model, fix_bn_statistics, freeze_stages, set_train_mode
from retrieval.model.small_maps import use_small_map_convs
from retrieval.resources import compute_device, keep_freed_memory, set_threads
from retrieval.train.distributed import all_sum, broadcast
from retrieval.train.job import Job
from retrieval.train.optim import EMA, PullToStart, group_schedules, param_groups, set_backbone_frozen
from retrieval.train.resume import rng_state, set_rng_state
from retrieval.train.validation import evaluate, validation_images

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the augmentation pipeline for ``epoch``: a function of (seed, epoch) only, so an
    epoch's augmentations do not depend on how many epochs ran before it in this process."""
    return int(np.random.SeedSequence([seed % 2**32, epoch]).generate_state(1)[0])


def cpu_copy(state_dict: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


class LossOf(torch.nn.Module):
    """Model and loss as one module (what DistributedDataParallel wraps: the margin head's
    class centres need their gradients averaged too); ``forward(x, y)`` is :func:`forward_loss`."""

    def __init__(self, model, loss_fn, device: torch.device, dtype: torch.dtype | None, channels_last: bool):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.device, self.dtype, self.channels_last = device, dtype, channels_last

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return forward_loss(self.model, self.loss_fn, x, y, self.device, self.dtype, self.channels_last)


def forward_loss(model, loss_fn, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                 dtype: torch.dtype | None, channels_last: bool) -> torch.Tensor:
    """One batch's training loss: the model under autocast (``dtype`` None: fp32), the loss in fp32."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        emb = model(x)
    return loss_fn(emb.float(), y)


class Run:
    """One backbone's training run on one fold: the seeded model and loss, the training loader
    and the optimiser, built in this order (the order fixes the random draws)."""

    def __init__(self, job: Job):
        tp, d = job.params.train, job.d
        self.job, self.tp = job, tp
        self.seed = job.params.seed + job.fold
        seed_everything(self.seed)
        set_threads(tp.threads, d.on_node)
        keep_freed_memory()  # big activations reused between steps, not page-faulted afresh
        self.device = compute_device(d.local_rank)
        self.train_df, self.valid_df = fold_parts(job.folds, job.fold)
        self.valid_images = None  # decoded at the first validation (rank 0 alone validates)
        classes = sorted(self.train_df[LABEL].unique())
        if len(classes) < 2:
            raise InputError(f"fold {job.fold}: trains on {len(classes)} class; a model needs at least 2 "
                             "(lower cv.n_folds)")
        check_fold_validates(job.folds, job.fold)  # as the check stage does, for a run of train alone
        self.n_classes = len(classes)
        targets = self.train_df[LABEL].map({c: i for i, c in enumerate(classes)}).to_numpy()
        self._build_model()
        self.ds = ImageDataset(job.root, self.train_df[IMAGE], targets, None)  # its transform is set for each epoch
        self.loader, self.sampler = train_loader(self.ds, targets, tp, self.seed, self.device, d)
        self.steps_per_epoch = len(self.loader)
        self._build_optimiser()

    def _build_model(self) -> None:
        tp, mp, d, fold = self.tp, self.job.params.model, self.job.d, self.job.fold
        model, meta = build_model(mp)
        use_small_map_convs(model)  # the backward on maps of a few pixels without oneDNN (small_maps.py)
        meta.update(fold=fold, classes=self.n_classes,
                    image_size=tp.final_image_size if tp.final_epochs else tp.image_size)
        if d.world > 1 and self.device.type == "cuda" and not tp.freeze_bn:
            # statistics of the global batch; timm's conversion keeps its BatchNormAct layers' activations.
            # Before freezing, so that the frozen list holds the converted modules.
            from timm.layers import convert_sync_batchnorm
            model = convert_sync_batchnorm(model)
        elif d.world > 1 and not tp.freeze_bn and d.main:
            log.warning("fold %d: %d CPU processes: BatchNorm statistics are each process's own slice of the "
                        "batch (no SyncBatchNorm on the CPU); train.freeze_bn makes them batch-independent",
                        fold, d.world)
        self.frozen = freeze_stages(model, tp.freeze_stages)
        model.to(self.device)
        if tp.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model, self.meta = model, meta
        self.loss_fn = metric_loss(mp, tp, self.n_classes).to(self.device)

    def _build_optimiser(self) -> None:
        tp, device, d = self.tp, self.device, self.job.d
        total = self.steps_per_epoch * tp.epochs
        warmup = int(round(tp.warmup_epochs * self.steps_per_epoch))
        groups = param_groups(self.model, self.loss_fn, tp)
        self.backbone_trainable = [prm for g in groups if g["backbone"] for prm in g["params"]]
        self.opt = torch.optim.AdamW(groups, weight_decay=tp.weight_decay,
                                     fused=device.type in ("cpu", "cuda"))  # one kernel, not one per tensor
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, group_schedules(groups, total, warmup, tp.head_warmup_epochs * self.steps_per_epoch))
        self.pull = PullToStart(self.opt, tp.l2sp_decay) if tp.l2sp_decay > 0 else None  # built on the pretrained weights
        self.ema = EMA(self.model, tp.ema_decay) if tp.ema_decay > 0 else None
        self.shown = copy.deepcopy(self.model) if self.ema is not None else self.model  # the weights validated and kept
        self.dtype = autocast_dtype(tp.amp, device, training=True)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)  # fp16 (older GPUs) only
        self.step_loss = LossOf(self.model, self.loss_fn, device, self.dtype, tp.channels_last)
        if d.enabled:  # gradients averaged over the processes during backward
            self.step_loss = torch.nn.parallel.DistributedDataParallel(
                self.step_loss, device_ids=[d.local_rank] if device.type == "cuda" else None,
                find_unused_parameters=tp.head_warmup_epochs > 0)  # the frozen backbone has no gradients

    def validate(self, weights: dict | None = None) -> dict:
        """Validation mAP@1000 and P@1 of ``weights`` (default: the current or EMA weights);
        rank 0 validates, the others take its figures."""
        if weights is not None or self.ema is not None:
            self.shown.load_state_dict(weights if weights is not None else self.ema.state)
        tp, d = self.tp, self.job.d
        if d.main and self.valid_images is None:
            self.valid_images = validation_images(self.job.root, self.valid_df, tp.val_image_size, self.meta)
        m = evaluate(self.shown, self.valid_images, self.valid_df, tp.batch_size * 2, tp.num_workers,
                     tp.amp, tp.channels_last) if d.main else None
        return broadcast(m, d)

    def trained_weights(self) -> dict:
        """The weights training has reached (the EMA's with one), on the CPU."""
        return cpu_copy(self.ema.state if self.ema is not None else self.model.state_dict())

    def state(self) -> dict:
        """What a resume needs besides the progress: every module's and the optimiser's state."""
        return {"model": self.model.state_dict(), "loss_fn": self.loss_fn.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "ema": None if self.ema is None else cpu_copy(self.ema.state),
                "ema_updates": 0 if self.ema is None else self.ema.updates, "rng": rng_state(self.loader.generator)}

    def load_state(self, state: dict) -> None:
        """Take up the run where a saved :meth:`state` left it."""
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss_fn"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.state = {k: v.to(self.device) for k, v in state["ema"].items()}
            self.ema.updates = state["ema_updates"]
        set_rng_state(state["rng"], self.loader.generator)

    def epoch_size(self, epoch: int) -> int:
        """Training image size of ``epoch`` (1-based): progressive resizing ends at final_image_size."""
        tp = self.tp
        return tp.final_image_size if epoch > tp.epochs - tp.final_epochs else tp.image_size

    def _prepare_epoch(self, epoch: int) -> None:
        """Head warm-up or not, frozen modules in eval mode, this epoch's augmentation seed and size."""
        tp, model = self.tp, self.model
        head_only = epoch <= tp.head_warmup_epochs
        set_backbone_frozen(model, self.backbone_trainable, head_only)
        set_train_mode(model, [model.backbone] if head_only else self.frozen)
        if tp.freeze_bn:
            fix_bn_statistics(model)
        # in-process augmentations (num_workers 0) start each epoch from a seed of their own;
        # workers are seeded by seed_worker from the loader's generator (saved and restored)
        seed = epoch_seed(self.seed, epoch)
        self.ds.transform = train_transform(self.epoch_size(epoch), self.meta["mean"], self.meta["std"], seed)
        if self.job.d.enabled:  # augmentation independent of the rank and worker that loads an image
            self.ds.sample_seed = seed
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over the training batches: (loss summed over images, images), summed over every
        process's slice. A Ctrl-C is taken after each step."""
        self._prepare_epoch(epoch)
        seen, loss_sum, d = 0, 0.0, self.job.d
        bar = tqdm(self.loader, desc=f"epoch {epoch}/{self.tp.epochs}", unit="batch",
                   disable=None if d.main else True, leave=False)
        for i, (x, y) in enumerate(bar):
            loss = self._step(x, y, epoch, (epoch - 1) * self.steps_per_epoch + i)
            seen += len(x)
            loss_sum += loss * len(x)
            bar.set_postfix(loss=f"{loss:.3f}")
            self.job.interrupts.check()
        loss_sum, seen = all_sum([loss_sum, seen], d)
        return loss_sum, seen

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> float:
        """One optimiser step on a batch (``step``: the run's count before it); its loss."""
        loss = self.step_loss(x, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fold {self.job.fold} epoch {epoch} step {step}: loss is {loss.item()}")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.pull is not None:
            self.pull()  # at this step's rates
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.item()
