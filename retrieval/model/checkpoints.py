"""Checkpoints: ``{"meta": {...}, "state_dict": {...}}``, where ``meta`` holds everything needed
to rebuild the model without params.yaml. A fold trained with several backbones writes
``{"members": [checkpoint, ...]}``, one per backbone in params order
(:func:`models_from_checkpoint` reads both kinds).

A model's fingerprint (:func:`model_fingerprint`) is the sha256 of its weights, computed from the
weights themselves when they are loaded (so every checkpoint has one, whatever wrote it); the
feature files that extract writes record it, and their readers compare it."""
from __future__ import annotations

import hashlib
from pathlib import Path

import timm

from retrieval.io import InputError, atomic_path, first_line, read_torch_file, save_torch
from retrieval.model.network import EmbeddingModel


def weights_fingerprint(model) -> str:
    """sha256 of one model's weights and buffers (names and bytes, in state_dict order)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(models: list[tuple]) -> str:
    """The fingerprint of a fold's model, ``[(model, meta)]`` one per backbone: its one member's
    weights fingerprint, or the sha256 of the members' in order."""
    prints = [weights_fingerprint(model) for model, _ in models]
    return prints[0] if len(prints) == 1 else hashlib.sha256("+".join(prints).encode()).hexdigest()


def save_members(path: str | Path, members: list[tuple[dict, dict]]) -> None:
    """Write the checkpoint of a fold's (state_dict, meta) members: one member is written as a
    plain checkpoint, several as ``{"members": [...]}``."""
    ckpts = [{"meta": meta, "state_dict": sd} for sd, meta in members]
    with atomic_path(path) as tmp:
        save_torch(ckpts[0] if len(ckpts) == 1 else {"members": ckpts}, tmp)


def _rebuild(ckpt: dict, path: Path) -> tuple[EmbeddingModel, dict]:
    if not isinstance(ckpt, dict) or "meta" not in ckpt or "state_dict" not in ckpt:
        raise InputError(f"{path}: not a checkpoint of this pipeline (needs meta and state_dict)")
    meta = ckpt["meta"]
    try:
        backbone = timm.create_model(meta["backbone"], pretrained=False)
        backbone.reset_classifier(0, global_pool="")
        model = EmbeddingModel(backbone, meta["embedding_dim"], meta["gem_p"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{path}: its weights do not rebuild the model it describes ({first_line(err)}); "
                         "re-run the train stage") from None
    return model.eval(), meta


def models_from_checkpoint(path: str | Path) -> list[tuple[EmbeddingModel, dict]]:
    """Every model a checkpoint holds (one per backbone), rebuilt, weights loaded, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint (run the train stage first)")
    ckpt = read_torch_file(path, "checkpoint", "re-run the train stage", weights_only=False)
    if isinstance(ckpt, dict) and "members" in ckpt:
        if not isinstance(ckpt["members"], list) or not ckpt["members"]:
            raise InputError(f"{path}: its members list is empty or not a list")
        return [_rebuild(c, path) for c in ckpt["members"]]
    return [_rebuild(ckpt, path)]


def model_from_checkpoint(path: str | Path) -> tuple[EmbeddingModel, dict]:
    """Rebuild the model a single-backbone checkpoint describes, weights loaded, in eval mode."""
    models = models_from_checkpoint(path)
    if len(models) != 1:
        raise InputError(f"{path}: holds {len(models)} backbones' models; read it with models_from_checkpoint")
    return models[0]
