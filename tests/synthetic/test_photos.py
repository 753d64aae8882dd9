"""synthetic/photos.py: shelf photos and catalog images of a design, and their fixed JPEG encode."""
import hashlib

import numpy as np
from PIL import Image

from synthetic.photos import render_catalog, render_photo, save_jpeg
from synthetic.products import class_design, seeded_rng

DESIGN = class_design(0, 0)
GOLDEN_PHOTO = "adabf0cc61f5b6c1"  # sha256 of its pixels (48 px), as retrieval/data/demo.py drew it


def test_photo_is_a_function_of_its_generator():
    a = np.asarray(render_photo(DESIGN, seeded_rng(0, "train", 0, 0), 48))
    b = np.asarray(render_photo(DESIGN, seeded_rng(0, "train", 0, 0), 48))
    c = np.asarray(render_photo(DESIGN, seeded_rng(0, "train", 0, 1), 48))
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # golden: the demo set's first training photo; a change of any drawing step changes it
    assert hashlib.sha256(a.tobytes()).hexdigest()[:16] == GOLDEN_PHOTO


def test_every_draw_comes_from_the_generator_given():
    # the photo takes as many draws as it takes: the generator is left where it left it, the same each time
    r1, r2 = seeded_rng(3, "q"), seeded_rng(3, "q")
    render_photo(DESIGN, r1, 32)
    render_photo(DESIGN, r2, 32)
    assert r1.random() == r2.random()


def test_catalog_is_the_clean_design_on_white():
    im = np.asarray(render_catalog(DESIGN, 64)).astype(int)
    assert im.shape == (64, 64, 3)
    assert (im[:3, :3] == 255).all() and (im[-3:, -3:] == 255).all()  # white corners
    assert (im[32, 32] != 255).any()  # the product in the middle
    assert np.array_equal(im, np.asarray(render_catalog(DESIGN, 64)))


def test_photo_background_is_not_the_catalog_white():
    im = np.asarray(render_photo(DESIGN, seeded_rng(0, "reference", 0, 0), 64)).astype(int)
    assert not (im[:3, :3] >= 250).all()


def test_save_jpeg_gives_the_same_bytes_each_time(tmp_path):
    im = render_photo(DESIGN, seeded_rng(1, "x"), 48)
    save_jpeg(im, tmp_path / "a.jpg")
    save_jpeg(im, tmp_path / "b.jpg")
    assert (tmp_path / "a.jpg").read_bytes() == (tmp_path / "b.jpg").read_bytes()
    with Image.open(tmp_path / "a.jpg") as back:
        assert (back.format, back.mode, back.size) == ("JPEG", "RGB", (48, 48))
        err = np.abs(np.asarray(back).astype(int) - np.asarray(im).astype(int)).mean()
    assert err < 12  # quality 90: close to the image, not it
