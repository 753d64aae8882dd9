"""The bundle's image rules and eval transform, without torch, equal the pipeline's."""
import io

import numpy as np
import pytest
from PIL import Image

from retrieval.bundle import InputError, decode_image
from retrieval.bundle.preprocess import eval_input, image_array
from retrieval.data.images import IMAGE, load_image, scan_test
from retrieval.data.loaders import eval_transform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


@pytest.mark.parametrize("size", [48, 72, 224])
def test_eval_input_equals_the_albumentations_eval_transform(bundle_source, size):
    root = bundle_source[2]
    rng = np.random.default_rng(size)
    arrays = [load_image(root / p) for p in scan_test(root, "query")[IMAGE][:3]]
    arrays.append(rng.integers(0, 256, (37, 91, 3), dtype=np.uint8))  # odd sizes, up- and downscaled
    got = eval_input(arrays, size, MEAN, STD)
    want = np.stack([eval_transform(size, MEAN, STD)(image=a)["image"].numpy() for a in arrays])
    assert got.shape == want.shape == (4, 3, size, size)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_decode_image_is_load_image_of_the_file(bundle_source):
    root = bundle_source[2]
    for p in scan_test(root, "reference")[IMAGE][:4]:
        assert np.array_equal(np.asarray(decode_image((root / p).read_bytes(), p)), load_image(root / p))


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(encoded(im, "JPEG", exif=exif.tobytes()), "rotated.jpg")
    assert out.size == (20, 40) and out.mode == "RGB"


def test_alpha_goes_on_white_and_16_bit_is_scaled():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(decode_image(encoded(rgba, "PNG"), "clear.png")).min() == 255
    deep = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert deep.mode.startswith("I;16")
    assert np.asarray(decode_image(encoded(deep, "PNG"), "deep.png")).min() == 255
    # a PIL image passed to search takes the same rules
    assert image_array(rgba).min() == 255 and image_array(rgba).shape == (4, 4, 3)


def test_undecodable_empty_and_bomb_inputs_are_refused_naming_them(monkeypatch):
    with pytest.raises(InputError, match=r"^notes\.txt: cannot decode image") as err:
        decode_image(b"hello, not an image", "notes.txt")
    assert "object at 0x" not in str(err.value) and str(err.value).endswith("image file notes.txt)")
    with pytest.raises(InputError, match=r"^empty\.jpg: cannot decode image \(empty"):
        decode_image(b"", "empty.jpg")
    data = encoded(Image.new("RGB", (64, 64)), "PNG")
    with pytest.raises(InputError, match=r"^cut\.png: cannot decode image"):
        decode_image(data[: len(data) // 2], "cut.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match=r"^big\.png: refused, beyond Pillow's decompression-bomb limit"):
        decode_image(data, "big.png")
    with pytest.raises(InputError, match="expected the image's bytes"):
        decode_image("a path.jpg", "a path.jpg")
