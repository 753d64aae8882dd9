"""Helpers of the service's tests: synthetic photos, their ids, JPEG bytes."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

N_REFS = 6  # references in the test bundle: ref00 .. ref05, photos of seeds 0 ..


def photo(seed: int, size: int = 64) -> Image.Image:
    """A synthetic RGB photo, different for each ``seed``: coloured rectangles on a plain ground."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(4):
        x0, y0 = rng.integers(0, size - 8, 2)
        w, h = rng.integers(8, size // 2, 2)
        draw.rectangle([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return im


def jpeg(im: Image.Image) -> bytes:
    """``im`` encoded as JPEG (quality 95)."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def ref_id(n: int) -> str:
    return f"ref{n:02d}"
