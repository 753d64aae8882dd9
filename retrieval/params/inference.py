"""The sections that use the fold models: extraction, search and re-ranking, the fusion of
the folds and the report."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from retrieval.params.fields import Amp, ImageSize, LoaderWorkers, Off, Section, Seed, Sub


class ExtractParams(Section):
    image_size: int = ImageSize(224,
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
    nproc: int = Field(1, ge=1,
        description=("extraction processes under torchrun, each embedding a slice of every set (one GPU a "
                     "process on CUDA, gloo on the CPU); the extract stage's --nproc; not with shard_size > 0"))
    num_workers: LoaderWorkers = Field("auto",
        description="DataLoader worker processes, as train.num_workers")
    amp: Amp = Field("auto",
        description="mixed precision: auto (bf16 on CUDA or a CPU with AVX-512 BF16 / AMX), bf16, or off")
    runtime: Literal["torch", "onnxruntime"] = Field("torch",
        description=("the CPU forward: torch, or onnxruntime (the model exported to ONNX, fp32, amp aside; "
                     "bench/extract_runtime.py); CUDA always runs torch"))
    bad_query: Literal["error", "empty"] = Field("error",
        description=("an undecodable test query: error (stop), or empty (an empty ranking for it, counted in "
                     "the metrics and logged)"))
    # measured default (docs/decisions.md)
    whiten_power: float = Field(0.5, gt=0.0, le=1.0,
        description=("eigenvalue exponent of the whitening: 1 whitens fully, 0.5 halfway (standard deviations "
                     "to their square root)"))
    # off at these values: several backbones only; sharded, resumable extraction
    member_weights: list[float] | None = Off(None,
        description=("several backbones (model.backbone a list): one weight per backbone for the weighted "
                     "concatenation of their embeddings, or null: chosen on the fold's validation images "
                     "(cosine mAP@1000)"))
    member_weight_step: float = Off(0.1, gt=0.0, le=1.0,
        description="grid step of the member-weight choice (weights in steps of this, summing to 1)")
    shard_size: int = Off(0, ge=0,
        description=("> 0: embed each set this many images at a time into a memory map on disk (the stage's "
                     "--resume-dir), so a killed run continues from its last finished shard; 0 = in memory"))

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


RANKING_STEPS = ("kreciprocal", "diffusion")  # produce the final ranking; at most one, last


class RerankParams(Section):
    k: int = Field(1000, ge=1, description="ranked references kept per query")
    steps: list[Literal["dba", "qe", "kreciprocal", "diffusion"]] = Field(["dba", "qe", "diffusion"],
        description=("re-ranking steps in order: dba and qe change vectors; kreciprocal or diffusion (at "
                     "most one, last) makes the final ranking; [] = plain cosine search; [dba, qe] for "
                     "galleries too large for a graph step"))
    dba: QEParams = Sub(QEParams, "database-side augmentation: each reference plus its k nearest references")
    qe: QEParams = Sub(QEParams, "alpha-query expansion: each query plus its top k references")
    diffusion: DiffusionParams = Sub(DiffusionParams, "diffusion on the references' kNN graph (Iscen et al. 2017)")
    # off at these values: a step not in steps; the exact search
    kreciprocal: KReciprocalParams = Sub(KReciprocalParams,
        "k-reciprocal re-ranking (Zhong et al. 2017) on sparse neighbour lists", off=True)
    index: IndexParams = Sub(IndexParams,
        "the search of the references: exact, or an approximate faiss index for large galleries", off=True)

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
    # off at this value
    fold_weights: list[float] | None = Off(None,
        description=("one weight per fold of cv.folds, or null for equal weights; to favour folds that "
                     "validate better"))


class ReportParams(Section):
    n_valid: int = Field(12, ge=1, description="validation queries shown, spread from worst to best AP")
    n_test: int = Field(6, ge=0, description="test queries shown (a seeded sample)")
    top: int = Field(10, ge=1, description="references shown per query")
    thumb: int = Field(96, ge=16, description="thumbnail side in pixels")
    seed: int = Seed(0, "the seed of the sample of test queries shown")
