"""Training one fold: margin-head metric learning with validation mAP@1000 every epoch.

Resuming: with a ``resume_dir`` the full training state is written there (atomically, as
``last.pt``) at the end of every epoch, and a later call with the same params, data and code
picks up after the last finished epoch and ends with the same model and history as a run that
was never interrupted. Per-epoch timings (``seconds``, ``train_img_per_s``) are the only
difference: rows of epochs before the resume keep the timings of the run that did them.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from retrieval.config import Params
from retrieval.data import ImageDataset, PKSampler, make_loader, seed_worker, train_transform
from retrieval.distributed import Dist, RankSlices, all_sum, barrier, broadcast, check_batch
from retrieval.embed import embed_images
from retrieval.io import InputError, atomic_path, claimed, save_torch
from retrieval.model import (autocast_dtype, backbone_layer_ids, build_model, freeze_stages, metric_loss,
                             save_members, set_train_mode)
from retrieval.search import validation_map

log = logging.getLogger(__name__)

STATE_FILE = "last.pt"  # the resume state inside resume_dir
STATE_VERSION = 3
# Test hook only: a process whose environment sets this to N SIGKILLs itself right after the
# N-th optimiser step of the run (steps counted from epoch 1, across resumes, and across the
# backbones of a several-backbone run, each counting all its epochs' steps), to simulate a
# crash mid-epoch. Unset (always, outside tests/test_resume.py) it does nothing.
KILL_AT_STEP_ENV = "RETRIEVAL_TEST_KILL_AT_STEP"
# Modules whose code decides the numbers a training run produces: a state saved by other code
# is not resumed.
_CODE = ("train.py", "model.py", "data.py", "distributed.py", "embed.py", "metrics.py", "search.py")


def lr_factor(step: int, total_steps: int, warmup_steps: int, floor: float = 0.01) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``floor`` at the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model, loss_fn, tp) -> list[dict]:
    """The optimiser's groups: one per backbone layer (stem, stages) at ``lr x backbone_lr_scale x
    layer_decay ** (layers above it)``, the neck and pooling at ``lr``, the margin head at
    ``head_lr``. Frozen parameters are left out; ``backbone`` marks the backbone's groups and
    ``name`` names each (``backbone.<layer>``, ``neck``, ``head``)."""
    ids, top = backbone_layer_ids(model.backbone)
    layers: dict[int, list] = {}
    for name, prm in model.backbone.named_parameters():
        if prm.requires_grad:
            layers.setdefault(ids[name], []).append(prm)
    base = tp.lr * tp.backbone_lr_scale
    groups = [{"params": ps, "lr": base * tp.layer_decay ** (top - i), "backbone": True, "name": f"backbone.{i}"}
              for i, ps in sorted(layers.items())]
    rest = [prm for name, prm in model.named_parameters() if not name.startswith("backbone.") and prm.requires_grad]
    groups.append({"params": rest, "lr": tp.lr, "backbone": False, "name": "neck"})
    if list(loss_fn.parameters()):  # the margin head's class centres, at their own rate
        groups.append({"params": list(loss_fn.parameters()), "lr": tp.head_lr, "backbone": False, "name": "head"})
    return groups


def group_schedules(groups: list[dict], total: int, warmup: int, head_steps: int) -> list:
    """LambdaLR factors per group: the neck and head warm up and decay over the whole run; the
    backbone stays at 0 for the ``head_steps`` of the head warm-up, then warms up and decays over
    the steps left."""
    def backbone(step: int) -> float:
        return 0.0 if step < head_steps else lr_factor(step - head_steps, total - head_steps, warmup)

    def rest(step: int) -> float:
        return lr_factor(step, total, warmup)
    return [backbone if g["backbone"] else rest for g in groups]


class EMA:
    """Exponential moving average of a model's weights and buffers, updated after every step;
    the decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after n updates, so the average
    follows the first steps closely (as timm's ModelEmaV3)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            e = self.state[k]
            e.lerp_(v.detach(), 1.0 - d) if e.is_floating_point() else e.copy_(v)
        self.updates += 1


def interpolate(start: dict, end: dict, alpha: float) -> dict:
    """WiSE-FT's weight-space mix ``(1 - alpha) x start + alpha x end`` of two state dicts of one
    model; integer tensors (BatchNorm's step counts) are taken from ``end``."""
    return {k: torch.lerp(start[k], v, alpha) if v.is_floating_point() else v.clone() for k, v in end.items()}


def set_backbone_frozen(model, trainable: list[torch.nn.Parameter], frozen: bool) -> None:
    """Head warm-up: stop (or restart) the gradients of the backbone's trainable parameters;
    :func:`set_train_mode` then keeps the whole backbone in eval mode."""
    for prm in trainable:
        prm.requires_grad_(not frozen)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the augmentation pipeline for ``epoch``: a function of (seed, epoch) only, so an
    epoch's augmentations do not depend on how many epochs ran before it in this process."""
    return int(np.random.SeedSequence([seed % 2**32, epoch]).generate_state(1)[0])


def train_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the training loader: :func:`retrieval.data.seed_worker`, and SIGINT
    ignored, so a Ctrl-C stops the main process (one 'interrupted' line) and not the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed_worker(worker_id)


class Interrupts:
    """Ctrl-C handling for a training run (see :func:`interrupt_main_process_only`)."""

    def __init__(self):
        self.pending = False

    def check(self) -> None:
        """Raise KeyboardInterrupt if a Ctrl-C came and was swallowed on its way."""
        if self.pending:
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_main_process_only():
    """Within the block, Ctrl-C (SIGINT) stops this process only, and is never lost.

    A terminal sends SIGINT to every process of the foreground group, DataLoader workers too.
    Forked workers inherit the handler set here and ignore the signal from their first
    instant, before any ``worker_init_fn`` runs. In this process a KeyboardInterrupt raised
    where Python swallows exceptions (the at-fork hooks that run while a loader starts its
    workers, ``__del__`` methods: "Exception ignored in ...") is not printed but kept
    pending, and :meth:`Interrupts.check` raises it at the next training step or epoch.
    Yields the :class:`Interrupts`; a non-default SIGINT handler, or a call outside the main
    thread, is left alone.
    """
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield interrupts
        return
    main_pid = os.getpid()
    previous_hook = sys.unraisablehook

    def handler(signum, frame):
        if os.getpid() != main_pid:
            return  # a forked child (DataLoader worker): the main process stops the run
        interrupts.pending = True
        raise KeyboardInterrupt

    def unraisable(info):
        if not (interrupts.pending and issubclass(info.exc_type, KeyboardInterrupt)):
            previous_hook(info)

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = unraisable
    try:
        yield interrupts
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook = previous_hook


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


def evaluate(model, meta: dict, root: str, valid: pd.DataFrame, image_size: int, batch_size: int,
             num_workers: int, amp: str, k: int = 1000) -> dict:
    """mAP@k and P@1 of the fold's validation queries against its validation references."""
    emb, rate = embed_images(model, meta, root, valid["image"].tolist(), image_size, batch_size,
                             num_workers=num_workers, amp=amp, desc="validate")
    return validation_map(emb, valid["role"].to_numpy(), valid["label"].to_numpy(), k)


def _wise(start: dict, last: dict, tp, best: dict, best_state: dict, validate) -> tuple[dict, dict, dict]:
    """Validate each WiSE-FT mix of the start and the last epoch's weights; return the best of
    them and of the epochs (the mix's record carries its ``alpha``) and every mix's mAP@1000."""
    scores = {}
    for alpha in tp.wise_alphas:
        mixed = interpolate(start, last, alpha)
        m = validate(mixed)
        scores[str(alpha)] = m["map@1000"]
        log.info("WiSE-FT alpha %.2f: val mAP@1000 %.4f, P@1 %.4f", alpha, m["map@1000"], m["p@1"])
        if m["map@1000"] > best["map@1000"]:
            best, best_state = {"epoch": tp.epochs, **m, "alpha": alpha}, mixed
    return best, best_state, scores


# -- resume state ------------------------------------------------------------------------------

def run_fingerprint(params: Params, fold: int, root: str | Path, train_df: pd.DataFrame,
                    valid_df: pd.DataFrame) -> str:
    """sha256 of everything that decides a fold's training run: seed, fold, the model and train
    params, the training and validation images (path, label, role, byte size), the training
    code and the torch / timm / albumentations versions."""
    import albumentations
    import timm

    def images(df: pd.DataFrame) -> list:
        cols = [c for c in ("image", "label", "role") if c in df]
        sizes = [os.stat(Path(root) / i).st_size if (Path(root) / i).is_file() else -1 for i in df["image"]]
        return [list(map(str, row)) + [size] for row, size in zip(df[cols].itertuples(index=False), sizes)]

    here = Path(__file__).resolve().parent
    doc = {
        "version": STATE_VERSION, "seed": params.seed, "fold": fold,
        "model": params.model.model_dump(mode="json"), "train": params.train.model_dump(mode="json"),
        "train_images": images(train_df), "valid_images": images(valid_df),
        "code": {name: hashlib.sha256((here / name).read_bytes()).hexdigest() for name in _CODE},
        "versions": [torch.__version__, timm.__version__, albumentations.__version__],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _rng_state(loader_generator: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "loader": loader_generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict, loader_generator: torch.Generator) -> None:
    loader_generator.set_state(state["loader"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])


def load_resume_state(path: Path, fingerprint: str) -> dict | None:
    """The state saved at ``path`` if it belongs to this run (same fingerprint), else None (logged)."""
    if not path.is_file():
        return None
    try:
        # weights_only: the state holds tensors and plain Python values only
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable state means: start afresh
        log.warning("%s: unreadable resume state (%s: %s); ignored, training from scratch",
                    path, type(err).__name__, err)
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION \
            or state.get("fingerprint") != fingerprint:
        log.warning("%s: resume state of other params, data or code; ignored, training from scratch", path)
        return None
    return state


def _cpu_copy(state_dict: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


def train_fold(params: Params, folds: pd.DataFrame, root: str, fold: int, model_path: str | Path,
               history_path: str | Path, resume_dir: str | Path | None = None, d: Dist = Dist()) -> dict:
    """Train the model of ``fold`` on the other folds' classes; write the checkpoint and history.

    The checkpoint kept is the epoch with the best validation mAP@1000 (epoch 0 is the
    pretrained model before any step, the reference point); it and the history are written
    when training ends. With ``resume_dir``, the training state is saved there after every
    epoch, a matching state found there is resumed, and it is deleted once the outputs are
    written.

    With several backbones (``model.backbone`` a list) each is trained in turn, as a run of its
    own (same seed, its state under ``resume_dir/<backbone>``, so finished members are not
    trained again after a crash); the checkpoint holds them all, the history has the first
    backbone's columns as they are and every other column suffixed ``/<backbone>``, and the
    metrics are the first backbone's plus ``members`` (each backbone's) and the total seconds.

    Under torchrun (``d``, :mod:`retrieval.distributed`) every process trains its slice of each
    global batch and rank 0 alone validates and writes; the others return the same metrics.
    """
    backbones = params.model.backbones
    # Ctrl-C: one 'interrupted' line, no tracebacks; a second run on the same resume_dir is refused
    with interrupt_main_process_only() as interrupts, claimed(resume_dir if d.main else None):
        results, states, steps = [], [], 0
        for b in backbones:
            member = params.model_copy(update={"model": params.model.member(b)})
            sub = None if resume_dir is None else Path(resume_dir) / b if len(backbones) > 1 else Path(resume_dir)
            *result, member_steps = _train_fold(member, folds, root, fold, sub, interrupts, steps, d)
            results.append(result)
            states.append(None if sub is None else sub / STATE_FILE)
            steps += member_steps
    if not d.main:
        barrier(d)  # rank 0 writes the outputs
        return results[0][3]
    save_members(model_path, [(r[0], r[1]) for r in results])
    history = results[0][2]
    for b, r in zip(backbones[1:], results[1:]):
        history = history.merge(r[2].rename(columns={c: f"{c}/{b}" for c in r[2].columns if c != "epoch"}),
                                on="epoch", how="outer")
    with atomic_path(history_path) as tmp:
        history.to_csv(tmp, index=False, float_format="%.6g")
    for state_path in states:  # finished: a later run (other code, --force) must not resume them
        if state_path is not None and state_path.exists():
            state_path.unlink()
            for folder in (state_path.parent, Path(resume_dir)):
                try:
                    folder.rmdir()
                except OSError:
                    pass  # not empty, or gone
    metrics = results[0][3]
    if len(backbones) > 1:
        metrics = {**metrics, "seconds": float(sum(r[3]["seconds"] for r in results)),
                   "members": {b: r[3] for b, r in zip(backbones, results)}}
    barrier(d)
    return metrics


def _train_fold(params: Params, folds: pd.DataFrame, root: str, fold: int, resume_dir: Path | None,
                interrupts: Interrupts, steps_before: int = 0, d: Dist = Dist()
                ) -> tuple[dict, dict, pd.DataFrame, dict, int]:
    """One backbone's run: (best state_dict, its meta, history, metrics, its total optimiser
    steps); writes only the resume state. ``steps_before`` (the steps of the
    backbones trained before it) only offsets the test hook's step count."""
    tp, mp = params.train, params.model
    seed = params.seed + fold
    seed_everything(seed)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if d.enabled else 1
    torch.set_num_threads(tp.threads or max(1, (os.cpu_count() or 1) // local_world))
    device = torch.device(f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu")

    train_df = folds[folds["fold"] != fold].reset_index(drop=True)
    valid_df = folds[folds["fold"] == fold].reset_index(drop=True)
    classes = sorted(train_df["label"].unique())
    if len(classes) < 2:
        raise InputError(f"fold {fold}: trains on {len(classes)} class; a model needs at least 2 (lower cv.n_folds)")
    targets = train_df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()

    model, meta = build_model(mp)
    meta.update(fold=fold, classes=len(classes), image_size=tp.final_image_size if tp.final_epochs else tp.image_size)
    if d.world > 1 and device.type == "cuda" and not tp.freeze_bn:
        # statistics of the global batch; timm's conversion keeps its BatchNormAct layers' activations.
        # Before freezing, so that the frozen list holds the converted modules.
        from timm.layers import convert_sync_batchnorm
        model = convert_sync_batchnorm(model)
    elif d.world > 1 and not tp.freeze_bn and d.main:
        log.warning("fold %d: %d CPU processes: BatchNorm statistics are each process's own slice of the "
                    "batch (no SyncBatchNorm on the CPU); train.freeze_bn makes them batch-independent",
                    fold, d.world)
    frozen = freeze_stages(model, tp.freeze_stages)
    model.to(device)
    if tp.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = metric_loss(mp, tp, len(classes)).to(device)

    def epoch_size(epoch: int) -> int:
        """Training image size of ``epoch`` (1-based): progressive resizing ends at final_image_size."""
        return tp.final_image_size if epoch > tp.epochs - tp.final_epochs else tp.image_size

    ds = ImageDataset(root, train_df["image"], targets, None)  # its transform is set for each epoch
    drop_last = len(ds) > tp.batch_size
    sampler = PKSampler(targets, tp.m_per_class, tp.batch_size, len(ds), seed) if tp.sampler == "pk" else None
    if d.enabled:  # the single process's global batches, each cut into one slice per rank
        check_batch(tp.batch_size, d.world, tp.m_per_class if sampler is not None else None)
        generator = torch.Generator().manual_seed(seed)
        order = sampler if sampler is not None else torch.utils.data.RandomSampler(ds, generator=generator)
        batches = RankSlices(torch.utils.data.BatchSampler(order, tp.batch_size, drop_last), d.rank, d.world)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=tp.num_workers,
                                             worker_init_fn=seed_worker if tp.num_workers > 0 else None,
                                             generator=generator, pin_memory=device.type == "cuda")
    else:
        loader = make_loader(ds, tp.batch_size, shuffle=True, num_workers=tp.num_workers, seed=seed,
                             drop_last=drop_last, sampler=sampler)
    if tp.num_workers > 0:
        loader.worker_init_fn = train_worker_init
    steps_per_epoch = len(loader)
    total = steps_per_epoch * tp.epochs
    warmup = int(round(tp.warmup_epochs * steps_per_epoch))
    groups = param_groups(model, loss_fn, tp)
    backbone_trainable = [prm for g in groups if g["backbone"] for prm in g["params"]]
    opt = torch.optim.AdamW(groups, weight_decay=tp.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, group_schedules(groups, total, warmup, tp.head_warmup_epochs * steps_per_epoch))
    ema = EMA(model, tp.ema_decay) if tp.ema_decay > 0 else None
    shown = copy.deepcopy(model) if ema is not None else model  # the weights validated and kept
    dtype = autocast_dtype(tp.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 (older GPUs) only
    step_loss = LossOf(model, loss_fn, device, dtype, tp.channels_last)
    if d.enabled:  # gradients averaged over the processes during backward
        step_loss = torch.nn.parallel.DistributedDataParallel(
            step_loss, device_ids=[d.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=tp.head_warmup_epochs > 0)  # the frozen backbone has no gradients
    kill_at = int(os.environ.get(KILL_AT_STEP_ENV) or 0)  # test hook, see KILL_AT_STEP_ENV

    def validate(weights: dict | None = None) -> dict:  # rank 0 validates, the others take its figures
        if weights is not None or ema is not None:
            shown.load_state_dict(weights if weights is not None else ema.state)
        m = evaluate(shown, meta, root, valid_df, tp.val_image_size, tp.batch_size * 2,
                     tp.num_workers, tp.amp) if d.main else None
        return broadcast(m, d)

    state_path = Path(resume_dir) / STATE_FILE if resume_dir is not None else None
    fingerprint = run_fingerprint(params, fold, root, train_df, valid_df) if state_path else ""
    state = load_resume_state(state_path, fingerprint) if state_path else None
    if state is not None:
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss_fn"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.state, ema.updates = {k: v.to(device) for k, v in state["ema"].items()}, state["ema_updates"]
        history, best, best_state = state["history"], state["best"], state["best_state"]
        start_state = state["start_state"]
        start_epoch = int(state["epoch"])
        _set_rng_state(state["rng"], loader.generator)
        log.info("fold %d %s: resuming from %s after epoch %d of %d (best so far: epoch %d, val mAP@1000 %.4f)",
                 fold, mp.backbone, state_path, start_epoch, tp.epochs, best["epoch"], best["map@1000"])
        del state
    else:
        m0 = validate()
        interrupts.check()
        history = [{"epoch": 0, "image_size": tp.val_image_size, "train_loss": float("nan"), "lr": 0.0,
                    "backbone_lr": 0.0, "val_map@1000": m0["map@1000"],
                    "val_p@1": m0["p@1"], "seconds": 0.0, "train_img_per_s": float("nan")}]
        best, best_state = {"epoch": 0, **m0}, _cpu_copy(shown.state_dict())
        start_state = best_state
        start_epoch = 0
        log.info("fold %d %s: %d classes, %d training images, %d validation images; epoch 0 val mAP@1000 %.4f",
                 fold, mp.backbone, len(classes), len(ds), len(valid_df), m0["map@1000"])

    step = start_epoch * steps_per_epoch
    epochs_bar = tqdm(total=tp.epochs, initial=start_epoch, desc=f"fold {fold} {mp.backbone}", unit="epoch",
                      disable=None if d.main else True)
    for epoch in range(start_epoch + 1, tp.epochs + 1):
        head_only = epoch <= tp.head_warmup_epochs
        set_backbone_frozen(model, backbone_trainable, head_only)
        set_train_mode(model, [model.backbone] if head_only else frozen)
        if tp.freeze_bn:
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        # in-process augmentations (num_workers 0) start each epoch from a seed of their own;
        # workers are seeded by seed_worker from the loader's generator (saved and restored)
        ds.transform = train_transform(epoch_size(epoch), meta["mean"], meta["std"], epoch_seed(seed, epoch))
        if d.enabled:  # augmentation independent of the rank and worker that loads an image
            ds.sample_seed = epoch_seed(seed, epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        start, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch}/{tp.epochs}", unit="batch", disable=None if d.main else True,
                   leave=False)
        for x, y in bar:
            loss = step_loss(x, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fold {fold} epoch {epoch} step {step}: loss is {loss.item()}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update(model)
            step += 1
            seen += len(x)
            loss_sum += loss.item() * len(x)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step + steps_before == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            interrupts.check()
        train_s = time.perf_counter() - start
        loss_sum, seen = all_sum([loss_sum, seen], d)  # over every process's slice
        m = validate()
        interrupts.check()
        row = {"epoch": epoch, "image_size": epoch_size(epoch), "train_loss": loss_sum / max(seen, 1),
               "lr": next(g["lr"] for g in opt.param_groups if g["name"] == "neck"),
               "backbone_lr": max((g["lr"] for g in opt.param_groups if g["backbone"]), default=0.0),
               "val_map@1000": m["map@1000"], "val_p@1": m["p@1"],
               "seconds": time.perf_counter() - start, "train_img_per_s": seen / max(train_s, 1e-9)}
        history.append(row)
        log.info("fold %d %s epoch %d: loss %.4f, val mAP@1000 %.4f, P@1 %.4f, %.1f img/s",
                 fold, mp.backbone, epoch, row["train_loss"], m["map@1000"], m["p@1"], row["train_img_per_s"])
        epochs_bar.update(1)
        epochs_bar.set_postfix({"val mAP@1000": f"{m['map@1000']:.4f}", "best": f"{max(best['map@1000'], m['map@1000']):.4f}"})
        if m["map@1000"] > best["map@1000"]:
            best, best_state = {"epoch": epoch, **m}, _cpu_copy(shown.state_dict())
        if state_path is not None and d.main:
            with atomic_path(state_path) as tmp:
                save_torch({"version": STATE_VERSION, "fingerprint": fingerprint, "epoch": epoch,
                            "history": history, "best": best, "best_state": best_state, "start_state": start_state,
                            "model": model.state_dict(), "loss_fn": loss_fn.state_dict(),
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                            "ema": None if ema is None else _cpu_copy(ema.state),
                            "ema_updates": 0 if ema is None else ema.updates,
                            "rng": _rng_state(loader.generator)}, tmp)

    epochs_bar.close()
    wise = {}
    if tp.wise_alphas and tp.epochs:
        last = _cpu_copy(ema.state if ema is not None else model.state_dict())  # also after a resume at the end
        best, best_state, wise = _wise(start_state, last, tp, best, best_state, validate)
    if tp.epochs and best["epoch"] == 0 and d.main:
        log.warning("fold %d %s: training did not help: no epoch beat the pretrained model's validation "
                    "mAP@1000 %.4f; the checkpoint is the untrained epoch 0", fold, mp.backbone, best["map@1000"])
    hist = pd.DataFrame(history)
    trained = hist[hist["epoch"] > 0]
    meta = {**meta, "epoch": int(best["epoch"]), "val_map@1000": best["map@1000"], "wise_alpha": best.get("alpha")}
    return best_state, meta, hist, {
        "best_epoch": int(best["epoch"]),
        "val_map@1000": float(best["map@1000"]),
        "val_p@1": float(best["p@1"]),
        "epoch0_val_map@1000": float(history[0]["val_map@1000"]),
        "training_helped": bool(best["epoch"] > 0),
        "wise_alpha": best.get("alpha"),
        "wise_val_map@1000": wise,
        "train_images": int(len(ds)),
        "train_classes": int(len(classes)),
        "valid_images": int(len(valid_df)),
        "train_img_per_s": float(trained["train_img_per_s"].mean()) if len(trained) else 0.0,
        "seconds": float(hist["seconds"].sum()),
    }, total
