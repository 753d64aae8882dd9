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
