"""The optimiser's side of training: parameter groups with layer-wise learning rates, the
warm-up + cosine schedule, head warm-up on a frozen backbone, the EMA of the weights and
WiSE-FT's weight-space mix."""
from __future__ import annotations

import math

import torch

from retrieval.config import TrainParams
from retrieval.model.network import backbone_layer_ids


def lr_factor(step: int, total_steps: int, warmup_steps: int, floor: float = 0.01) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``floor`` at the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model, loss_fn, tp: TrainParams) -> list[dict]:
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


class PullToStart:
    """L2-SP (Li et al., "Explicit inductive bias for transfer learning with convolutional
    networks", 2018), decoupled from the gradient as AdamW decouples its weight decay: after each
    step every trainable backbone weight moves ``lr x decay`` of its way back to its pretrained
    value (``lr`` its group's current rate). Adam moves a weight by about ``lr`` a step, so one
    pushed the same way every step settles about ``1 / decay`` from where it started. The
    rates are read from ``opt`` at each call: loading an optimiser's state (a resume) replaces
    its group dicts."""

    def __init__(self, opt: torch.optim.Optimizer, decay: float):
        self.opt, self.decay = opt, decay
        self.start = {i: [p.detach().clone() for p in g["params"]] for i, g in enumerate(opt.param_groups)
                      if g["backbone"]}

    @torch.no_grad()
    def __call__(self) -> None:
        for i, start in self.start.items():
            group = self.opt.param_groups[i]
            share = group["lr"] * self.decay
            if share > 0:
                for p, p0 in zip(group["params"], start):
                    p.lerp_(p0, share)


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
