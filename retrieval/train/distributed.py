"""Training in several processes with PyTorch's own engine: torchrun and DistributedDataParallel.

``python -m stages.train --nproc N`` (N > 1) relaunches itself under ``torch.distributed.run``
(torchrun); each process then finds its rank in the environment torchrun sets. Backend: NCCL on
CUDA, gloo on the CPU. Every global batch (the same one a single process would draw: same
sampler, same generator) is cut into ``world`` equal slices, one per rank; DDP averages the
gradients, so with batch-independent layers the update is the single process's update with the
same global batch. Under torchrun each training image's augmentation is seeded by
(epoch seed, image index), so it does not depend on which rank or worker loads it.

Extraction may run the same way (``python -m stages.extract --nproc N``, extract.nproc): each
process embeds a contiguous slice of every image list (:func:`rank_slice`) and every process
gets all the rows back in order (:func:`gather_rows`); rank 0 alone writes.

What is per process: BatchNorm statistics in training mode (CUDA converts to SyncBatchNorm;
the CPU has none, so set ``train.freeze_bn`` for exact equivalence there) and the in-batch
mining of a pair loss (each rank mines its own slice, whole classes under P x K).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False  # running under torchrun (even with one process)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on_node(self) -> int:
        """Processes on this machine (torchrun's LOCAL_WORLD_SIZE), which share its cores."""
        return int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if self.enabled else 1


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup() -> Dist:
    """The process group of a torchrun launch (gloo on the CPU, NCCL on CUDA), or a single process."""
    if not under_torchrun():
        return Dist()
    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]), True)
    if torch.cuda.is_available():
        torch.cuda.set_device(d.local_rank)
    if not dist.is_initialized():
        # validation runs on rank 0 alone while the others wait: allow it hours, not minutes
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                timeout=datetime.timedelta(hours=4))
    return d


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(obj, d: Dist):
    """``obj`` of rank 0, on every rank."""
    if not d.enabled or d.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: Sequence[float], d: Dist) -> list[float]:
    """``values`` summed over the processes (float64)."""
    if not d.enabled or d.world == 1:
        return [float(v) for v in values]
    device = f"cuda:{d.local_rank}" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors only
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.cpu().tolist()


def rank_slice(n: int, d: Dist) -> tuple[int, int]:
    """The contiguous rows ``[lo, hi)`` of ``n`` that rank ``d.rank`` takes: ``n / world`` each, the
    first ``n % world`` ranks one more (every row once, in rank order)."""
    base, extra = divmod(n, d.world)
    lo = d.rank * base + min(d.rank, extra)
    return lo, lo + base + (d.rank < extra)


def gather_rows(blocks: list[np.ndarray], d: Dist) -> list[np.ndarray]:
    """Each of ``blocks`` (this rank's :func:`rank_slice` rows of an array) joined with every
    other rank's, in rank order: the whole arrays, on every rank."""
    if not d.enabled or d.world == 1:
        return blocks
    parts: list = [None] * d.world
    dist.all_gather_object(parts, blocks)  # pickled; NCCL carries them on this rank's GPU
    return [np.concatenate([p[i] for p in parts]) for i in range(len(blocks))]


def barrier(d: Dist) -> None:
    if d.enabled and d.world > 1:
        dist.barrier()


class RankSlices(torch.utils.data.Sampler):
    """A batch sampler giving rank ``rank`` its slice of every global batch of ``batches``.

    Global batches must hold a multiple of ``world`` indices; slices are contiguous, so a
    P x K batch (K consecutive images per class) gives each rank whole classes when the slice
    size is a multiple of K.
    """

    def __init__(self, batches: torch.utils.data.Sampler, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            batch = list(batch)
            if len(batch) % self.world:
                raise ValueError(f"a batch of {len(batch)} cannot be split over {self.world} processes")
            n = len(batch) // self.world
            yield batch[self.rank * n:(self.rank + 1) * n]


def check_batch(batch_size: int, world: int, m_per_class: int | None) -> None:
    """Refuse a global batch that does not split evenly (and, for P x K, into whole classes)."""
    if batch_size % world:
        raise ValueError(f"train.batch_size {batch_size} must be a multiple of the {world} processes")
    if m_per_class and (batch_size // world) % m_per_class:
        raise ValueError(f"sampler pk: each of the {world} processes gets {batch_size // world} images, "
                         f"not a multiple of train.m_per_class {m_per_class}")


def relaunch(nproc: int, module: str, argv: Sequence[str]) -> int:
    """Run ``python -m module argv`` in ``nproc`` processes under torchrun (standalone rendezvous)."""
    from torch.distributed.run import get_args_parser, run

    # the script's own --nproc is not passed on: torchrun's parser would take it for an
    # abbreviation of its --nproc-per-node (and the processes know they run under torchrun)
    argv, i = list(argv), 0
    while i < len(argv):
        if argv[i] == "--nproc":
            del argv[i:i + 2]
        elif argv[i].startswith("--nproc="):
            del argv[i]
        else:
            i += 1
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", module, *argv])
    run(args)  # raises ChildFailedError (naming the failed rank) if a process fails
    return 0
