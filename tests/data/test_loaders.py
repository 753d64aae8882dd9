"""retrieval/data/loaders.py: the datasets, transforms, P x K sampler and DataLoaders."""
import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.config import TrainParams
from retrieval.data.loaders import (UNSEEDED_LOADER, HeldImages, ImageDataset, SizedViews, eval_transform, make_loader,
                                    train_loader, train_transform)
from retrieval.train.distributed import Dist
from retrieval.io import InputError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(50, 60, 3), (31, 17, 3), (64, 64)]):  # the last one greyscale
        Image.fromarray(rng.integers(0, 255, size=shape, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path, [f"{i}.png" for i in range(3)]


def test_held_images_give_the_items_of_decoding_each_time(photos):
    root, images = photos
    decoded = ImageDataset(root, images, np.arange(3), eval_transform(40, MEAN, STD))
    held = HeldImages(root, images, 40, MEAN, STD)
    assert len(held) == 3
    for i in range(3):
        (x, row), (y, row_held) = decoded[i], held[i]
        assert x.shape == (3, 40, 40) and row == row_held == i
        torch.testing.assert_close(y, x, rtol=0, atol=0)


def test_sized_views_decode_once_and_give_each_size(photos):
    root, images = photos
    views = ImageDataset(root, images, np.arange(3), SizedViews([eval_transform(s, MEAN, STD) for s in (24, 40)]))
    for size, i in ((24, 0), (40, 1)):
        want, _ = ImageDataset(root, images, np.arange(3), eval_transform(size, MEAN, STD))[2]
        torch.testing.assert_close(views[2][0][i], want, rtol=0, atol=0)


def test_held_images_name_an_undecodable_file(photos):
    root, images = photos
    (root / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.jpg: cannot decode"):
        HeldImages(root, images + ["bad.jpg"], 40, MEAN, STD)


# -- P x K batches (moved from tests/test_techniques.py) ------------------------------------------

from retrieval.data.loaders import PKSampler  # noqa: E402


def test_pk_sampler_batches_hold_p_classes_of_k_images():
    labels = np.repeat(np.arange(6), [5, 5, 5, 5, 3, 1])  # one class below K: drawn with replacement
    s = PKSampler(labels, m=2, batch_size=6, length=24, seed=0)
    s.set_epoch(1)
    idx = list(iter(s))
    assert len(idx) == len(s) == 24
    for b in range(0, 24, 6):
        batch = labels[idx[b:b + 6]]
        classes, counts = np.unique(batch, return_counts=True)
        assert len(classes) == 3 and (counts == 2).all(), batch


def test_pk_sampler_is_a_function_of_seed_and_epoch():
    labels = np.repeat(np.arange(8), 4)
    s = PKSampler(labels, m=4, batch_size=8, length=32, seed=5)
    s.set_epoch(2)
    first = list(iter(s))
    s.set_epoch(3)
    list(iter(s))
    np.random.seed(123)  # the global numpy state plays no part
    s.set_epoch(2)
    assert list(iter(s)) == first  # not an order left over from epoch 3
    fresh = PKSampler(labels, m=4, batch_size=8, length=32, seed=5)  # as after a resume
    fresh.set_epoch(2)
    assert list(iter(fresh)) == first
    s.set_epoch(4)
    assert list(iter(s)) != first


def test_pk_sampler_refuses_a_batch_it_cannot_fill():
    with pytest.raises(InputError, match="2 classes x train.m_per_class 4 cannot fill a batch of 16"):
        PKSampler(np.repeat([0, 1], 10), m=4, batch_size=16, length=20, seed=0)


# -- datasets and loaders ------------------------------------------------------------------------

class Rows(torch.utils.data.Dataset):
    """Items are their own row numbers: what a loader's order is made of."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        return torch.tensor(i), i


def order(loader) -> list[int]:
    return torch.cat([x for x, _ in loader]).tolist()


def test_images_and_targets_must_pair_up(photos):
    root, images = photos
    with pytest.raises(ValueError, match="differ in length"):
        ImageDataset(root, images, [0, 1], eval_transform(16, MEAN, STD))


def test_sample_seed_makes_an_augmentation_a_function_of_seed_and_image(photos):
    root, images = photos
    ds = ImageDataset(root, images, [0, 1, 2], train_transform(24, MEAN, STD, seed=0))
    ds.sample_seed = 7
    first = ds[1][0]
    ds[0], ds[2]  # other images drawn in between do not change it
    torch.testing.assert_close(ds[1][0], first, rtol=0, atol=0)
    ds.sample_seed = 8
    assert not torch.equal(ds[1][0], first)


def test_make_loader_order_is_a_function_of_its_seed():
    a, b = (order(make_loader(Rows(), 4, shuffle=True, num_workers=0, seed=3)) for _ in range(2))
    assert a == b and sorted(a) == list(range(10)) and a != list(range(10))
    assert order(make_loader(Rows(), 4, shuffle=True, num_workers=0, seed=4)) != a
    assert order(make_loader(Rows(), 4, shuffle=False, num_workers=0)) == list(range(10))


def test_an_unseeded_loader_leaves_torchs_generator_alone():
    torch.manual_seed(0)
    want = torch.rand(1)
    torch.manual_seed(0)
    order(make_loader(Rows(), 4, shuffle=False, num_workers=0))
    assert torch.equal(torch.rand(1), want)
    assert order(make_loader(Rows(), 4, shuffle=True, num_workers=0)) == \
        order(make_loader(Rows(), 4, shuffle=True, num_workers=0, seed=UNSEEDED_LOADER))


@pytest.mark.parametrize("n,batch,batches", [(10, 4, [4, 4]), (4, 4, [4]), (3, 4, [3])])
def test_train_loader_drops_a_short_last_batch_unless_it_is_the_only_one(n, batch, batches):
    ds = torch.utils.data.Subset(Rows(), range(n))
    tp = TrainParams(batch_size=batch, num_workers=0)
    loader, sampler = train_loader(ds, np.zeros(n, dtype=int), tp, seed=0, device=torch.device("cpu"), d=Dist())
    assert sampler is None and [len(x) for x, _ in loader] == batches


def test_train_loader_with_pk_batches():
    targets = np.repeat(np.arange(4), 3)
    ds = torch.utils.data.Subset(Rows(), range(12))
    tp = TrainParams(batch_size=4, m_per_class=2, sampler="pk", num_workers=0)
    loader, sampler = train_loader(ds, targets, tp, seed=1, device=torch.device("cpu"), d=Dist())
    assert sampler is not None
    for x, _ in loader:
        _, counts = np.unique(targets[x.numpy()], return_counts=True)
        assert len(x) == 4 and (counts == 2).all()
