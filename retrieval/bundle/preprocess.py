"""Images for the bundle, without torch: decoding by the pipeline's rules
(:func:`retrieval.data.images.load_image`: EXIF orientation, alpha on white, 16-bit scaled,
decompression bombs refused) from bytes, and the evaluation transform in numpy, equal to
:func:`retrieval.data.loaders.eval_steps` (albumentations' ``Resize``, OpenCV's bilinear
interpolation, then ``Normalize`` with the model's mean and std, channels first)."""
from __future__ import annotations

import io
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageOps

from retrieval.data.images import _to_rgb, load_image
from retrieval.io import InputError


class _NamedBytes(io.BytesIO):
    """Bytes that :func:`load_image` opens like a file and names, in its errors, by ``name``."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self._label = name

    def __str__(self) -> str:
        return self._label

    __repr__ = __str__  # Pillow's "cannot identify image file ..." names the file by its repr


def decode_image(data: bytes, name: str) -> Image.Image:
    """An RGB image decoded from ``data`` as the pipeline decodes its files; an empty or
    undecodable input, or a decompression bomb, is an :class:`InputError` naming ``name``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"{name}: expected the image's bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InputError(f"{name}: cannot decode image (empty: 0 bytes)")
    return Image.fromarray(load_image(_NamedBytes(bytes(data), name)))


def image_array(image: Image.Image, name: str = "image") -> np.ndarray:
    """An RGB uint8 [H, W, 3] array of a PIL image by the pipeline's rules (EXIF orientation,
    alpha composited on white, 16-bit scaled): what :func:`load_image` gives for its file."""
    if not isinstance(image, Image.Image):
        raise InputError(f"{name}: expected a PIL image, got {type(image).__name__}")
    try:
        return np.asarray(_to_rgb(ImageOps.exif_transpose(image)))
    except Exception as err:  # noqa: BLE001 - a lazily loaded image may fail to decode here
        raise InputError(f"{name}: cannot decode image ({type(err).__name__}: {err})") from None


def eval_input(images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A float32 [B, 3, size, size] batch of RGB uint8 arrays: resized to ``size`` x ``size``
    (bilinear), scaled to [0, 1] and normalised with ``mean`` and ``std``."""
    shift = np.float32(255.0) * np.asarray(mean, np.float32)
    scale = np.float32(255.0) * np.asarray(std, np.float32)
    out = np.empty((len(images), 3, size, size), np.float32)
    for i, img in enumerate(images):
        resized = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        out[i] = ((resized.astype(np.float32) - shift) / scale).transpose(2, 0, 1)
    return out
