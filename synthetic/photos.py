"""Photographing the synthetic products: shelf photos and clean catalog images, saved as JPEG.

A *photo* (:func:`render_photo`) renders a design under a random viewpoint (scale, rotation,
translation, slight shear and perspective) over a cluttered "shelf" background, with lighting
jitter, blur, sensor noise and sometimes an occluder; every draw comes from the generator it is
given. A *catalog* image (:func:`render_catalog`) is the clean design centred on white. Only PIL
drawing and a fixed JPEG encode (:func:`save_jpeg`) are used, so the same draws give the same bytes.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from synthetic.products import PALETTE, Design, render_design

JPEG_QUALITY = 90


def _perspective_coeffs(h: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE coefficients (output -> input) for the forward homography ``h``."""
    inv = np.linalg.inv(h)
    inv = inv / inv[2, 2]
    return tuple(float(v) for v in inv.reshape(-1)[:8])


def _background(rng: np.random.Generator, w: int) -> Image.Image:
    c0 = rng.integers(60, 235, 3).astype(np.float32)
    c1 = np.clip(c0 + rng.normal(0, 45, 3), 0, 255)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32) / w
    t = np.clip(0.5 + (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang), 0, 1)[..., None]
    arr = c0 * (1 - t) + c1 * t
    bg = Image.fromarray(arr.astype(np.uint8), "RGB")
    dr = ImageDraw.Draw(bg)
    # other goods: boxes and blobs in any colour, some palette colours among them
    for _ in range(int(rng.integers(4, 11))):
        col = tuple(int(v) for v in (PALETTE[int(rng.integers(len(PALETTE)))] if rng.random() < 0.5
                                     else rng.integers(0, 256, 3)))
        x, y = rng.uniform(-0.1, 1.0, 2) * w
        sw, sh = rng.uniform(0.08, 0.35, 2) * w
        if rng.random() < 0.6:
            dr.rectangle((x, y, x + sw, y + sh), fill=col)
        else:
            dr.ellipse((x, y, x + sw, y + sh), fill=col)
    # shelf edges: a few horizontal boards, slightly tilted
    for _ in range(int(rng.integers(0, 3))):
        y = rng.uniform(0.05, 0.95) * w
        th = rng.uniform(0.03, 0.08) * w
        tilt = rng.uniform(-0.05, 0.05) * w
        shade = int(rng.integers(90, 220))
        col = (shade, int(shade * rng.uniform(0.8, 1.0)), int(shade * rng.uniform(0.6, 0.95)))
        dr.polygon([(0, y), (w, y + tilt), (w, y + tilt + th), (0, y + th)], fill=col)
        dr.line([(0, y + th), (w, y + tilt + th)], fill=(40, 35, 30), width=max(1, w // 96))
    return bg


def _occluder(rng: np.random.Generator, dr: ImageDraw.ImageDraw, w: int, cx: float, cy: float) -> None:
    kind = rng.random()
    if kind < 0.4:  # a price tag
        tw, th = rng.uniform(0.18, 0.3) * w, rng.uniform(0.1, 0.16) * w
        x = cx + rng.uniform(-0.35, 0.1) * w
        y = cy + rng.uniform(0.05, 0.3) * w
        dr.rectangle((x, y, x + tw, y + th), fill=(250, 250, 245), outline=(60, 60, 60))
        for k in range(2):
            dr.rectangle((x + tw * 0.1, y + th * (0.25 + 0.35 * k), x + tw * (0.85 - 0.3 * k),
                          y + th * (0.4 + 0.35 * k)), fill=(30, 30, 30))
    elif kind < 0.75:  # a hand / fingers coming in from a side
        skin = tuple(int(v) for v in np.array([225, 180, 150]) * rng.uniform(0.6, 1.05))
        side = rng.integers(4)
        r = rng.uniform(0.12, 0.2) * w
        for k in range(int(rng.integers(1, 4))):
            off = (k - 1) * r * 0.9
            if side == 0:
                box = (-r, cy + off - r * 0.45, cx - rng.uniform(0.05, 0.2) * w, cy + off + r * 0.45)
            elif side == 1:
                box = (cx + rng.uniform(0.05, 0.2) * w, cy + off - r * 0.45, w + r, cy + off + r * 0.45)
            elif side == 2:
                box = (cx + off - r * 0.45, cy + rng.uniform(0.1, 0.25) * w, cx + off + r * 0.45, w + r)
            else:
                box = (cx + off - r * 0.45, -r, cx + off + r * 0.45, cy - rng.uniform(0.1, 0.25) * w)
            dr.rounded_rectangle(box, radius=r * 0.45, fill=skin)
    else:  # something in front: a box from the bottom edge
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        x = rng.uniform(0, 0.7) * w
        dr.rectangle((x, rng.uniform(0.72, 0.88) * w, x + rng.uniform(0.2, 0.4) * w, w), fill=col)


def render_photo(design: Design, rng: np.random.Generator, size: int) -> Image.Image:
    """One "photo" of ``design``: random viewpoint over clutter, with lighting and sensor effects."""
    w = 2 * size  # draw at twice the size, then downsample (anti-aliasing)
    warped, (cx, cy) = _viewpoint(render_design(design, w), rng, w)
    photo = _on_shelf(warped, rng, w)
    if rng.random() < 0.3:
        _occluder(rng, ImageDraw.Draw(photo), w, cx, cy)
    return _sensor(_lit(photo, rng, w), rng, size)


def _viewpoint(art: Image.Image, rng: np.random.Generator, w: int) -> tuple[Image.Image, tuple[float, float]]:
    """``art`` (w x w) seen from a random viewpoint: scaled, rotated, moved, sheared and in slight
    perspective; and where its centre went."""
    s = rng.uniform(0.62, 1.0)
    th = math.radians(rng.uniform(-20, 20))
    cx, cy = w / 2 + rng.uniform(-0.13, 0.13) * w, w / 2 + rng.uniform(-0.13, 0.13) * w
    ax = rng.uniform(0.9, 1.1)
    shear = rng.uniform(-0.12, 0.12)
    px, py = rng.uniform(-0.7, 0.7, 2) / w
    centre = np.array([[1, 0, -w / 2], [0, 1, -w / 2], [0, 0, 1]])
    persp = np.array([[1, 0, 0], [0, 1, 0], [px, py, 1]])
    affine = np.array([[s * ax * math.cos(th), -s * math.sin(th) + s * shear * math.cos(th), cx],
                       [s * ax * math.sin(th), s * math.cos(th) + s * shear * math.sin(th), cy],
                       [0, 0, 1]])
    coeffs = _perspective_coeffs(affine @ persp @ centre)
    return art.transform((w, w), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR), (cx, cy)


def _on_shelf(warped: Image.Image, rng: np.random.Generator, w: int) -> Image.Image:
    """The product over a cluttered background, with a soft drop shadow under it."""
    photo = _background(rng, w).convert("RGBA")
    shadow = Image.new("RGBA", (w, w), (0, 0, 0, 0))
    shadow.putalpha(warped.getchannel("A").point(lambda v: v * 45 // 100))
    off = int(rng.integers(2, 7)) * w // 96
    shadow = shadow.transform((w, w), Image.Transform.AFFINE, (1, 0, -off, 0, 1, -off), Image.Resampling.NEAREST)
    photo = Image.alpha_composite(photo, shadow.filter(ImageFilter.GaussianBlur(w / 64)))
    return Image.alpha_composite(photo, warped).convert("RGB")


def _lit(photo: Image.Image, rng: np.random.Generator, w: int) -> Image.Image:
    """Lighting: brightness, contrast, white balance and a soft vignette."""
    arr = np.asarray(photo, dtype=np.float32)
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, 3)
    contrast = rng.uniform(0.75, 1.15)
    arr = ((arr - 128) * contrast + 128) * gain
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32) / w - 0.5
    arr *= (1 - rng.uniform(0, 0.35) * (xx ** 2 + yy ** 2) * 2)[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _sensor(photo: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """Focus blur (sometimes), the downsampling to ``size`` and sensor noise."""
    blur = rng.uniform(0, 1.6)
    if blur > 0.3:
        photo = photo.filter(ImageFilter.GaussianBlur(blur))
    photo = photo.resize((size, size), Image.Resampling.BOX)
    arr = np.asarray(photo, dtype=np.float32) + rng.normal(0, rng.uniform(1, 6), (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def render_catalog(design: Design, size: int) -> Image.Image:
    """The clean design centred on white."""
    d = 2 * size
    page = Image.new("RGBA", (d, d), (255, 255, 255, 255))
    page = Image.alpha_composite(page, render_design(design, d)).convert("RGB")
    return page.resize((size, size), Image.Resampling.BOX)


def save_jpeg(im: Image.Image, path: Path) -> None:
    """``im`` as a JPEG at ``path``, encoded the same way every time (fixed quality and subsampling)."""
    im.save(path, "JPEG", quality=JPEG_QUALITY, subsampling="4:2:0", optimize=False, progressive=False)
