"""Turning image lists into batches: transforms, the datasets, the P x K sampler, worker seeding
and the DataLoaders (:func:`make_loader` for embedding, :func:`train_loader` for training)."""
from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Callable, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from pytorch_metric_learning.samplers import MPerClassSampler

from retrieval.config import TrainParams
from retrieval.data.images import load_image
from retrieval.io import InputError
from retrieval.resources import loader_workers
from retrieval.train.distributed import Dist, RankSlices, check_batch


def train_transform(size: int, mean: Sequence[float], std: Sequence[float], seed: int) -> A.Compose:
    return A.Compose(
        [
            A.RandomResizedCrop(size=(size, size), scale=(0.35, 1.0), ratio=(0.75, 1.333)),
            A.HorizontalFlip(p=0.5),
            A.Affine(rotate=(-15, 15), p=0.5),
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=0.8),
            A.Normalize(mean=mean, std=std),
            ToTensorV2(),
        ],
        seed=seed,
    )


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    return A.Compose(list(eval_steps(size, mean, std)))


def eval_steps(size: int, mean: Sequence[float], std: Sequence[float]) -> tuple[A.Resize, A.Compose]:
    """:func:`eval_transform` in its two steps: the resize (what :class:`HeldImages` holds) and the rest."""
    return A.Resize(size, size), A.Compose([A.Normalize(mean=mean, std=std), ToTensorV2()])


class ImageDataset(torch.utils.data.Dataset):
    """Images under ``root`` with integer targets (class indices, or row numbers)."""

    def __init__(self, root: str | Path, images: Sequence[str], targets: Sequence[int],
                 transform: Callable):
        if len(images) != len(targets):
            raise ValueError("images and targets differ in length")
        self.root = Path(root)
        self.images = list(images)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform
        # set (e.g. per epoch): the transform is reseeded from (sample_seed, i) for each image,
        # so an image's augmentation does not depend on the worker or process that loads it
        self.sample_seed: int | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = load_image(self.root / self.images[i])
        if self.sample_seed is not None:
            self.transform.set_random_seed(int(np.random.SeedSequence([self.sample_seed, i]).generate_state(1)[0]))
        return self.transform(image=img)["image"], int(self.targets[i])


def eval_images(root: str | Path, images: Sequence[str], size: int, mean: Sequence[float],
                std: Sequence[float]) -> ImageDataset:
    """``images`` for embedding: decoded at each pass and made :func:`eval_transform`'s tensors;
    items (tensor, row)."""
    return ImageDataset(root, images, np.arange(len(images)), eval_transform(size, mean, std))


class SizedViews:
    """An albumentations-style transform giving one decoded image as a list of tensors, one for
    each of ``transforms`` (multi-scale TTA: every size from one decoding)."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray) -> dict:
        return {"image": [t(image=image)["image"] for t in self.transforms]}


class HeldImages(torch.utils.data.Dataset):
    """Images decoded and resized once and held as uint8, for a set embedded again and again (a
    fold's validation images, every epoch); items as :class:`ImageDataset` with
    :func:`eval_transform` of the same size gives them: (tensor, row)."""

    def __init__(self, root: str | Path, images: Sequence[str], size: int, mean: Sequence[float],
                 std: Sequence[float]):
        resize, self.finish = eval_steps(size, mean, std)
        self.arrays = [resize(image=load_image(Path(root) / p))["image"] for p in images]

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        return self.finish(image=self.arrays[i])["image"], i


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy, random and the albumentations pipeline.

    torch gives each worker a seed derived from the loader's generator (new every epoch);
    albumentations keeps its own generator, which forked workers would otherwise replay
    identically, so it is reseeded here too.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the main process, not each worker
    cv2.setNumThreads(0)  # OpenCV's own thread pool would fight the model for the cores
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    np.random.seed(seed)
    random.seed(seed)
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


class PKSampler(MPerClassSampler):
    """P x K batches: each batch holds ``batch_size / m`` classes with ``m`` images each
    (pytorch-metric-learning's :class:`MPerClassSampler`; a class with fewer than ``m``
    images is drawn with replacement), ``length`` indices per epoch.

    The draw is a function of ``(seed, epoch)`` only (:meth:`set_epoch`), not of the global
    numpy state or of earlier epochs, so a resumed run draws the same batches.
    """

    def __init__(self, labels: Sequence[int], m: int, batch_size: int, length: int, seed: int):
        labels = np.asarray(labels)
        n_classes = len(np.unique(labels))
        if m * n_classes < batch_size:
            raise InputError(f"train.sampler pk: {n_classes} classes x train.m_per_class {m} cannot fill a "
                             f"batch of {batch_size}; lower train.batch_size or use sampler random")
        super().__init__(labels, m, batch_size=batch_size, length_before_new_iter=max(length, batch_size))
        self._labels0 = list(self.labels)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        from pytorch_metric_learning.utils import common_functions as c_f

        self.labels = list(self._labels0)
        saved = c_f.NUMPY_RANDOM
        c_f.NUMPY_RANDOM = np.random.RandomState(np.random.SeedSequence([self.seed % 2**32, self.epoch])
                                                 .generate_state(1)[0])
        try:
            return super().__iter__()
        finally:
            c_f.NUMPY_RANDOM = saved


# The generator seed of a loader whose caller has none (an unshuffled embedding loader): a loader
# always has a generator of its own, since one without draws its workers' seeds from torch's
# global generator, and so shifts every later draw of training. Not a params key.
UNSEEDED_LOADER = 0


def make_loader(dataset: ImageDataset, batch_size: int, shuffle: bool, num_workers: int | str,
                seed: int = UNSEEDED_LOADER, drop_last: bool = False, sampler=None) -> torch.utils.data.DataLoader:
    """A DataLoader of ``dataset``; ``num_workers`` a count or ``auto`` (:func:`retrieval.resources.loader_workers`)."""
    num_workers = loader_workers(num_workers)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


def train_loader(ds: ImageDataset, targets: np.ndarray, tp: TrainParams, seed: int, device: torch.device,
                 d: Dist) -> tuple[torch.utils.data.DataLoader, PKSampler | None]:
    """The training loader of a fold (shuffled images, or P x K batches with ``train.sampler: pk``)
    and its P x K sampler (None for shuffled images). A last batch smaller than ``batch_size`` is
    dropped unless it is the only one. Under torchrun (``d``) each process loads its slice of
    the single process's global batches (:class:`retrieval.train.distributed.RankSlices`)."""
    drop_last = len(ds) > tp.batch_size
    sampler = PKSampler(targets, tp.m_per_class, tp.batch_size, len(ds), seed) if tp.sampler == "pk" else None
    if not d.enabled:
        return make_loader(ds, tp.batch_size, shuffle=True, num_workers=tp.num_workers, seed=seed,
                           drop_last=drop_last, sampler=sampler), sampler
    check_batch(tp.batch_size, d.world, tp.m_per_class if sampler is not None else None)
    workers = loader_workers(tp.num_workers, d.on_node)
    generator = torch.Generator().manual_seed(seed)
    order = sampler if sampler is not None else torch.utils.data.RandomSampler(ds, generator=generator)
    batches = RankSlices(torch.utils.data.BatchSampler(order, tp.batch_size, drop_last), d.rank, d.world)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=workers,
                                         worker_init_fn=seed_worker if workers > 0 else None,
                                         generator=generator, pin_memory=device.type == "cuda")
    return loader, sampler
