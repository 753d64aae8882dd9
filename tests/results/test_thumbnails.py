"""The report's images: thumbnails decoded as the pipeline decodes images (one reader,
``load_image``), their data URIs, the right/wrong marks and the PNG grid."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from retrieval.data.images import load_image
from retrieval.io import InputError
from retrieval.results.report import Example
from retrieval.results.thumbnails import RIGHT, UNKNOWN, WRONG, data_uri, mark, render_grid, thumbnail, unreadable


def pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def test_a_square_image_at_its_own_size_is_load_image_itself(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(pixels(thumbnail(tmp_path / "a.png", 20)), load_image(tmp_path / "a.png"))


def test_a_16_bit_png_is_scaled_as_load_image_scales_it(tmp_path):
    # 16-bit grey 0x8080 is 8-bit 128 (divided by 257), not clipped to white
    Image.fromarray(np.full((12, 12), 0x8080, np.uint16)).save(tmp_path / "deep.png")
    got = pixels(thumbnail(tmp_path / "deep.png", 12))
    np.testing.assert_array_equal(got, load_image(tmp_path / "deep.png"))
    assert got[6, 6].tolist() == [128, 128, 128]


def test_alpha_is_composited_on_white_as_load_image_does(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200  # red under it, fully transparent on the left half, opaque on the right
    rgba[:, 5:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    got = pixels(thumbnail(tmp_path / "alpha.png", 10))
    np.testing.assert_array_equal(got, load_image(tmp_path / "alpha.png"))
    assert got[5, 1].tolist() == [255, 255, 255] and got[5, 8].tolist() == [200, 0, 0]


def test_a_decompression_bomb_is_not_decoded(tmp_path, monkeypatch):
    # 1,200 pixels against a limit of 1,000: Pillow itself only warns below twice its limit
    Image.new("RGB", (40, 30), (10, 200, 10)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match="decompression-bomb"):
        load_image(tmp_path / "bomb.png")
    np.testing.assert_array_equal(pixels(thumbnail(tmp_path / "bomb.png", 16)), pixels(unreadable(16)))


def test_an_undecodable_file_is_crossed_out(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    got = pixels(thumbnail(tmp_path / "bad.jpg", 16))
    np.testing.assert_array_equal(got, pixels(unreadable(16)))
    assert got[0, 8].tolist() == [200, 200, 200] and tuple(got[8, 8]) == WRONG  # grey, red cross


def test_a_wide_image_is_padded_not_cropped(tmp_path):
    Image.new("RGB", (40, 20), (0, 0, 255)).save(tmp_path / "wide.png")
    got = pixels(thumbnail(tmp_path / "wide.png", 20))
    assert got.shape == (20, 20, 3)
    assert got[0, 10].tolist() == [245, 245, 245] and got[10, 0].tolist() == [0, 0, 255]  # bands above and below


def test_data_uri_round_trip():
    im = Image.new("RGB", (8, 8), (30, 60, 90))
    uri = data_uri(im)
    assert uri.startswith("data:image/jpeg;base64,")
    back = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert back.size == (8, 8) and np.abs(pixels(back).astype(int) - [30, 60, 90]).max() <= 3  # JPEG quality 80


def test_mark():
    assert mark("a", "a") == RIGHT and mark("a", "b") == WRONG
    assert mark(None, "a") == UNKNOWN and mark("a", None) == UNKNOWN


def test_grid_marks_right_and_wrong(tmp_path):
    for name, c in {"q": (10, 10, 200), "r1": (10, 200, 10)}.items():
        Image.new("RGB", (40, 30), c).save(tmp_path / f"{name}.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    valid = Example("q", tmp_path / "q.jpg", "cola", ["r1", "r2"], [tmp_path / "r1.jpg", tmp_path / "broken.jpg"],
                    ["cola", "fanta"], [0.9, 0.8])
    size = render_grid([valid, valid], tmp_path / "grid.png", thumb=20, pad=4)
    cell, gap = 28, 12
    assert size == (3 * cell + gap, 2 * cell)
    im = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    assert tuple(im[0, cell + gap]) == (255, 255, 255)  # white between cells
    assert tuple(im[1, cell + gap + 1]) == RIGHT  # frame of the first reference: same class
    assert tuple(im[1, 2 * cell + gap + 1]) == WRONG  # second: another class (its image unreadable)
    assert np.abs(im[cell + 14, 14].astype(int) - (10, 10, 200)).max() <= 3  # the second row's query (JPEG)
