import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.data.loaders import HeldImages, ImageDataset, SizedViews, eval_transform
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
