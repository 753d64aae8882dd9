"""Typed view of ``params.yaml``: :class:`Params`, its checks across sections, and the loader.

The sections live in ``retrieval/params/`` by pipeline phase (``training.py``: data, demo, cv,
split, model, train; ``inference.py``: extract, rerank, ensemble, report); each is a pydantic
model that forbids unknown keys, so a typo such as ``train.epoch`` is refused before any work
starts, with a message naming the key. Their ``Field`` descriptions are the one home of each
key's meaning (docs/params.md is generated from them) and their defaults are ``params.yaml``'s
values (tests/test_config.py checks that they agree), so a key left out of the file means the
same as the file's own value; under DVC, the keys dvc.yaml interpolates (data.root, cv.folds,
train.nproc) must stay in the file. Import the sections from here.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError, model_validator

from retrieval.io import InputError
from retrieval.params.fields import MIN_IMAGE_SIZE, Section, Seed, Sub
from retrieval.params.inference import (DiffusionParams, EnsembleParams, ExtractParams, IndexParams, KReciprocalParams,
                                        QEParams, RerankParams, ReportParams)
from retrieval.params.training import CVParams, DataParams, DemoParams, ModelParams, SplitParams, TrainParams

__all__ = ["CVParams", "DataParams", "DemoParams", "DiffusionParams", "EnsembleParams", "ExtractParams",
           "IndexParams", "KReciprocalParams", "MIN_IMAGE_SIZE", "ModelParams", "Params", "QEParams",
           "RerankParams", "ReportParams", "Section", "SplitParams", "TrainParams", "load_params", "parse_params"]


class Params(Section):
    seed: int = Seed(42, "the split's, training's and augmentation's seed: another seed gives another run")
    data: DataParams = Sub(DataParams, "where the images are")
    cv: CVParams = Sub(CVParams, "cross-validation folds over classes")
    split: SplitParams = Sub(SplitParams, "how each fold's validation classes split into queries and references")
    model: ModelParams = Sub(ModelParams, "the network: backbone, embedding neck, margin head")
    train: TrainParams = Sub(TrainParams, "training one model per fold (and per backbone)")
    extract: ExtractParams = Sub(ExtractParams, "embedding the images, with test-time augmentation and whitening")
    rerank: RerankParams = Sub(RerankParams, "search and re-ranking of the references for each query")
    ensemble: EnsembleParams = Sub(EnsembleParams, "fusing the folds' rankings into the submission")
    report: ReportParams = Sub(ReportParams, "the HTML report's sample of queries")
    demo: DemoParams = Sub(DemoParams,
        "the synthetic set the demo stage generates (used when data.root is outputs/demo)")

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
