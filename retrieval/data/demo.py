"""A small, deterministic, synthetic "product photo" data set in the competition layout.

Every class is a made-up product: a silhouette (box, bottle, can, pouch or jar) in two or
three colours from a shared palette, with a surface pattern, a logo and text-like bars.
Its design is a pure function of ``(seed, class index)``. A *photo* renders the design under a
random viewpoint (scale, rotation, translation, slight shear and perspective) over a cluttered
"shelf" background, with lighting jitter, blur, sensor noise and sometimes an occluder; a
*catalog* image is the clean design centred on white. Layout written under ``out``::

    train/<class>/<id>.jpg       labelled photos of the training classes
    test/query/<id>.jpg          photos of other, unseen classes
    test/reference/<id>.jpg      photos of those classes plus one catalog image per class
    truth/query.csv              id,label (for scoring only)
    truth/reference.csv          id,label
    generated-by-demo.txt        the marker: only a folder holding it (or empty) is ever rewritten

Ids are short hashes with a split prefix (``t``/``q``/``r``), so no label leaks through a file
name. Same arguments give byte-identical files: each image has its own ``numpy`` PCG64
generator seeded from (seed, split, class, index), and only PIL drawing and a fixed JPEG encode
are used.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retrieval.io import InputError, atomic_path

# Shared palette: every class draws its colours from it, so colours repeat across classes
# and the mean colour of an image does not give its class away.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (200, 30, 40),    # red
    (30, 70, 170),    # blue
    (40, 140, 60),    # green
    (245, 200, 40),   # yellow
    (240, 120, 30),   # orange
    (120, 50, 150),   # purple
    (245, 245, 240),  # white
    (30, 30, 35),     # black
    (20, 150, 150),   # teal
    (230, 110, 160),  # pink
    (120, 75, 40),    # brown
    (150, 200, 230),  # light blue
)
SHAPES = ("box", "bottle", "can", "pouch", "jar")
PATTERNS = ("bands", "diagonal", "disc", "chevron", "dots", "split")
LOGOS = ("circle", "triangle", "star", "diamond", "ring", "square")
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Design:
    shape: str
    pattern: str
    logo: str
    colors: tuple[tuple[int, int, int], ...]  # body, pattern, accent
    params: tuple[float, ...]                 # layout numbers in [0, 1), pattern-specific


def _hash_int(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:16], "little")


def _rng(*parts: object) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(_hash_int("demo-rng", *parts)))


def _image_id(prefix: str, *parts: object) -> str:
    return prefix + hashlib.sha256(":".join(str(p) for p in ("demo-id", *parts)).encode()).hexdigest()[:12]


def class_design(seed: int, index: int) -> Design:
    """The design of class ``index``: shape and pattern come from a seeded permutation of all
    shape x pattern pairs (so the first 30 classes never share both), the rest from the class's
    own generator."""
    combos = [(s, p) for s in SHAPES for p in PATTERNS]
    order = _rng(seed, "combos").permutation(len(combos))
    shape, pattern = combos[int(order[index % len(combos)])]
    rng = _rng(seed, "class", index)
    cols = rng.choice(len(PALETTE), size=3, replace=False)
    logo = LOGOS[int(rng.integers(len(LOGOS)))]
    return Design(shape, pattern, logo, tuple(PALETTE[int(c)] for c in cols),
                  tuple(float(x) for x in rng.random(9)))


# -- drawing the design ---------------------------------------------------------------------

def _silhouette(shape: str, d: int, q: tuple[float, ...]):
    """Mask of the product outline on a d x d canvas, the label area (x0, y0, x1, y1), and the
    boxes of its cap, lid or rims (painted over the pattern)."""
    m = Image.new("L", (d, d), 0)
    caps: list[tuple[str, tuple[float, float, float, float]]] = []
    dr = ImageDraw.Draw(m)
    c = d / 2
    if shape == "box":
        w, h = d * (0.50 + 0.12 * q[0]), d * (0.78 + 0.1 * q[1])
        box = (c - w / 2, c - h / 2, c + w / 2, c + h / 2)
        dr.rounded_rectangle(box, radius=d * 0.02, fill=255)
        label = box
    elif shape == "bottle":
        w, h = d * (0.36 + 0.08 * q[0]), d * 0.60
        top = c - d * 0.44
        body = (c - w / 2, c - d * 0.16, c + w / 2, c - d * 0.16 + h)
        dr.rounded_rectangle(body, radius=w * 0.25, fill=255)
        nw = w * 0.38
        dr.polygon([(c - w / 2, body[1] + w * 0.25), (c - nw / 2, top + d * 0.12),
                    (c + nw / 2, top + d * 0.12), (c + w / 2, body[1] + w * 0.25)], fill=255)
        dr.rectangle((c - nw / 2, top + d * 0.03, c + nw / 2, top + d * 0.13), fill=255)
        cap = (c - nw * 0.62, top, c + nw * 0.62, top + d * 0.07)
        dr.rounded_rectangle(cap, radius=d * 0.01, fill=255)
        caps.append(("rect", cap))
        label = (body[0], body[1] + h * 0.18, body[2], body[3] - h * 0.1)
    elif shape == "can":
        w, h = d * (0.44 + 0.1 * q[0]), d * (0.70 + 0.08 * q[1])
        e = w * 0.16
        body = (c - w / 2, c - h / 2 + e, c + w / 2, c + h / 2 - e)
        dr.rectangle(body, fill=255)
        dr.ellipse((body[0], body[1] - e, body[2], body[1] + e), fill=255)
        dr.ellipse((body[0], body[3] - e, body[2], body[3] + e), fill=255)
        caps.append(("ellipse", (body[0], body[1] - e, body[2], body[1] + e)))
        label = (body[0], body[1] + e, body[2], body[3] - e * 0.5)
    elif shape == "pouch":
        wt, wb, h = d * 0.50, d * (0.62 + 0.1 * q[0]), d * 0.80
        y0, y1 = c - h / 2, c + h / 2
        dr.polygon([(c - wt / 2, y0), (c + wt / 2, y0), (c + wb / 2, y1 - d * 0.04),
                    (c - wb / 2, y1 - d * 0.04)], fill=255)
        dr.ellipse((c - wb / 2, y1 - d * 0.10, c + wb / 2, y1), fill=255)
        label = (c - wt / 2, y0 + h * 0.12, c + wt / 2, y1 - h * 0.05)
    else:  # jar: wide and short, with a lid
        w, h = d * (0.62 + 0.12 * q[0]), d * 0.52
        body = (c - w / 2, c - h / 2 + d * 0.08, c + w / 2, c + h / 2 + d * 0.08)
        dr.rounded_rectangle(body, radius=w * 0.12, fill=255)
        lw = w * 0.86
        lid = (c - lw / 2, body[1] - d * 0.12, c + lw / 2, body[1] + d * 0.02)
        dr.rounded_rectangle(lid, radius=d * 0.02, fill=255)
        caps.append(("rect", lid))
        label = (body[0], body[1] + h * 0.12, body[2], body[3] - h * 0.1)
    return m, tuple(int(round(v)) for v in label), caps


def _logo(dr: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill, outline) -> None:
    if kind == "circle":
        dr.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=max(1, int(r * 0.15)))
    elif kind == "ring":
        dr.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, int(r * 0.35)))
    elif kind == "square":
        dr.rectangle((cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85), fill=fill, outline=outline,
                     width=max(1, int(r * 0.12)))
    elif kind == "diamond":
        dr.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill, outline=outline)
    elif kind == "triangle":
        dr.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.7), (cx - r * 0.95, cy + r * 0.7)],
                   fill=fill, outline=outline)
    else:  # star
        pts = [(cx + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5),
                cy - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]
        dr.polygon(pts, fill=fill, outline=outline)


def _contrast_ink(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return (25, 25, 30) if sum(rgb) > 380 else (240, 240, 235)


@lru_cache(maxsize=64)
def render_design(design: Design, d: int) -> Image.Image:
    """The product alone, RGBA on a transparent d x d canvas."""
    body, pat, acc = design.colors
    q = design.params
    mask, (x0, y0, x1, y1), caps = _silhouette(design.shape, d, q)
    im = Image.new("RGB", (d, d), body)
    dr = ImageDraw.Draw(im)
    _draw_pattern(dr, design.pattern, q, d, (x0, y0, x1, y1), pat, acc)
    _draw_caps(dr, caps, q, d, acc)
    _draw_labels(dr, design, (x0, y0, x1, y1))
    out = _shaded(im, design.shape, d, x0, x1).convert("RGBA")
    # a thin dark outline so light products stand out from light backgrounds
    edge = mask.filter(ImageFilter.MaxFilter(3))
    outline = Image.new("RGBA", (d, d), (40, 40, 45, 255))
    outline.putalpha(edge)
    out.putalpha(mask)
    return Image.alpha_composite(outline, out)


def _draw_pattern(dr: ImageDraw.ImageDraw, p: str, q, d: int, box: tuple, pat, acc) -> None:
    """The class's pattern over the whole canvas (the silhouette's mask cuts it out later)."""
    x0, y0, x1, y1 = box
    lw, lh = x1 - x0, y1 - y0
    if p == "bands":
        for k in range(2 + int(q[2] * 2)):
            yc = y0 + lh * (0.15 + 0.7 * ((q[3] + 0.37 * k) % 1.0))
            hh = lh * (0.05 + 0.08 * q[4])
            dr.rectangle((0, yc - hh, d, yc + hh), fill=pat if k % 2 == 0 else acc)
    elif p == "diagonal":
        step = lw * (0.22 + 0.15 * q[2])
        sw = step * (0.3 + 0.3 * q[3])
        sign = 1 if q[4] < 0.5 else -1
        for k in range(-12, 13):
            o = k * step
            dr.polygon([(0, o), (0, o + sw), (d, o + sw + sign * d * 0.8), (d, o + sign * d * 0.8)], fill=pat)
    elif p == "disc":
        yc = y0 + lh * (0.3 + 0.3 * q[2])
        dr.rectangle((0, yc - lh * 0.14, d, yc + lh * 0.14), fill=pat)
        r = lw * (0.26 + 0.08 * q[3])
        dr.ellipse((x0 + lw / 2 - r, yc - r, x0 + lw / 2 + r, yc + r), fill=acc)
    elif p == "chevron":
        yc = y0 + lh * (0.2 + 0.5 * q[2])
        amp, th = lh * 0.12, lh * (0.06 + 0.05 * q[3])
        for k, col in enumerate((pat, acc)):
            yy = yc + k * th * 2.2
            dr.polygon([(0, yy), (d / 2, yy + amp), (d, yy), (d, yy + th), (d / 2, yy + amp + th), (0, yy + th)],
                       fill=col)
    elif p == "dots":
        sp = lw * (0.18 + 0.1 * q[2])
        r = sp * (0.22 + 0.15 * q[3])
        for i in range(int(d / sp) + 2):
            for j in range(int(d / sp) + 2):
                cx = i * sp + (sp / 2 if j % 2 else 0)
                cy = j * sp
                dr.ellipse((cx - r, cy - r, cx + r, cy + r), fill=pat if (i + j) % 3 else acc)
    else:  # split: two-tone, with a stripe along the seam
        xs = x0 + lw * (0.35 + 0.3 * q[2])
        if q[3] < 0.5:
            dr.rectangle((xs, 0, d, d), fill=pat)
            dr.rectangle((xs - lw * 0.04, 0, xs + lw * 0.04, d), fill=acc)
        else:
            ys = y0 + lh * (0.35 + 0.3 * q[2])
            dr.rectangle((0, ys, d, d), fill=pat)
            dr.rectangle((0, ys - lh * 0.035, d, ys + lh * 0.035), fill=acc)


def _draw_caps(dr: ImageDraw.ImageDraw, caps, q, d: int, acc) -> None:
    """Cap, lid or can rim: one of a few materials, chosen per class."""
    cap_col = ((190, 190, 195), (30, 30, 35), (245, 245, 240), acc)[int(q[8] * 4)]
    for kind, box in caps:
        if kind == "ellipse":
            dr.ellipse(box, fill=cap_col, outline=(90, 90, 95), width=max(1, d // 96))
        else:
            dr.rounded_rectangle(box, radius=d * 0.01, fill=cap_col)
            for k in range(1, 4):  # ridges
                yy = box[1] + (box[3] - box[1]) * k / 4
                dr.line([(box[0], yy), (box[2], yy)], fill=tuple(int(v * 0.8) for v in cap_col))


def _draw_labels(dr: ImageDraw.ImageDraw, design: Design, box: tuple) -> None:
    """Logo and text-like bars, placed from the class's own numbers."""
    body, _, acc = design.colors
    q = design.params
    x0, y0, x1, y1 = box
    lw, lh = x1 - x0, y1 - y0
    lx = x0 + lw * (0.3 + 0.4 * q[5])
    ly = y0 + lh * (0.15 + 0.2 * q[6])
    _logo(dr, design.logo, lx, ly, lw * (0.13 + 0.06 * q[7]), acc, _contrast_ink(acc))
    ink = _contrast_ink(body)
    ty = y0 + lh * (0.62 + 0.12 * q[6])
    bar_h = max(1.0, lh * 0.035)
    widths = (0.7, 0.45 + 0.3 * q[7], 0.55 + 0.2 * q[5])
    for k, wf in enumerate(widths[: 2 + int(q[4] * 2)]):
        yy = ty + k * bar_h * 1.9
        xa = x0 + lw * (0.5 - wf / 2)
        dr.rectangle((xa, yy, xa + lw * wf, yy + bar_h), fill=ink)


def _shaded(im: Image.Image, shape: str, d: int, x0: float, x1: float) -> Image.Image:
    """Shading: cylinders darken towards their sides, boxes and jars get a darker right face."""
    lw = x1 - x0
    arr = np.asarray(im, dtype=np.float32)
    xsn = (np.arange(d, dtype=np.float32) - (x0 + x1) / 2) / max(lw / 2, 1)
    if shape in ("bottle", "can", "jar"):
        shade = 0.72 + 0.28 * np.sqrt(np.clip(1 - xsn ** 2, 0, 1)) + 0.12 * np.exp(-((xsn + 0.45) / 0.12) ** 2)
    elif shape == "box":
        shade = np.where(xsn > 0.72, 0.78, 1.0).astype(np.float32)
    else:
        shade = 0.9 + 0.1 * np.clip(1 - np.abs(xsn), 0, 1)
    arr = np.clip(arr * shade[None, :, None], 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


# -- photos and catalog images --------------------------------------------------------------

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
    d = 2 * size
    art = render_design(design, d)
    s = (w / d) * rng.uniform(0.62, 1.0)
    th = math.radians(rng.uniform(-20, 20))
    cx, cy = w / 2 + rng.uniform(-0.13, 0.13) * w, w / 2 + rng.uniform(-0.13, 0.13) * w
    ax = rng.uniform(0.9, 1.1)
    shear = rng.uniform(-0.12, 0.12)
    px, py = rng.uniform(-0.7, 0.7, 2) / d
    centre = np.array([[1, 0, -d / 2], [0, 1, -d / 2], [0, 0, 1]])
    persp = np.array([[1, 0, 0], [0, 1, 0], [px, py, 1]])
    affine = np.array([[s * ax * math.cos(th), -s * math.sin(th) + s * shear * math.cos(th), cx],
                       [s * ax * math.sin(th), s * math.cos(th) + s * shear * math.sin(th), cy],
                       [0, 0, 1]])
    coeffs = _perspective_coeffs(affine @ persp @ centre)
    warped = art.transform((w, w), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)

    photo = _background(rng, w).convert("RGBA")
    # soft drop shadow under the product
    alpha = warped.getchannel("A")
    shadow = Image.new("RGBA", (w, w), (0, 0, 0, 0))
    shadow.putalpha(alpha.point(lambda v: v * 45 // 100))
    off = int(rng.integers(2, 7)) * w // 96
    shadow = shadow.transform((w, w), Image.Transform.AFFINE, (1, 0, -off, 0, 1, -off), Image.Resampling.NEAREST)
    photo = Image.alpha_composite(photo, shadow.filter(ImageFilter.GaussianBlur(w / 64)))
    photo = Image.alpha_composite(photo, warped).convert("RGB")
    if rng.random() < 0.3:
        _occluder(rng, ImageDraw.Draw(photo), w, cx, cy)

    # lighting: brightness, contrast, white balance and a soft vignette
    arr = np.asarray(photo, dtype=np.float32)
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, 3)
    contrast = rng.uniform(0.75, 1.15)
    arr = (arr - 128) * contrast + 128
    arr = arr * gain
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32) / w - 0.5
    arr *= (1 - rng.uniform(0, 0.35) * (xx ** 2 + yy ** 2) * 2)[..., None]
    photo = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
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


def _save_jpeg(im: Image.Image, path: Path) -> None:
    im.save(path, "JPEG", quality=JPEG_QUALITY, subsampling="4:2:0", optimize=False, progressive=False)


# -- the data set ---------------------------------------------------------------------------

def _check_args(seed, counts: dict[str, int], size) -> None:
    def is_int(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(seed):
        raise ValueError(f"seed must be an integer, not {seed!r}")
    for name, v in counts.items():
        low = 0 if name == "photos_per_ref_class" else 1
        if not is_int(v) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, not {v!r}")
    if not is_int(size) or size < 32:
        raise ValueError(f"size must be an integer >= 32, not {size!r}")


def class_name(index: int) -> str:
    return f"product-{index:02d}"


MARKER = "generated-by-demo.txt"  # claims a folder as the demo's own: only such a folder is rewritten
MARKER_TEXT = ("Written by the demo stage (python -m stages.demo), which replaces train/, test/ and truth/ "
               "here on each run: keep no data of your own in this folder.\n")
_DEMO_CLASS, _DEMO_TRAIN_FILE = re.compile(r"product-\d+"), re.compile(r"t[0-9a-f]{12}\.jpg")


def is_demo_root(root: str | Path, out: str | Path) -> bool:
    """Whether ``data.root`` (``root``) names the demo's folder ``out`` (the same path, links not followed)."""
    return os.path.normpath(os.path.abspath(root)) == os.path.normpath(os.path.abspath(out))


def check_demo_folder(out: Path) -> None:
    """Refuse to write into ``out`` unless it is the demo's own: absent, empty, or holding
    :data:`MARKER` (or a demo set written before the marker existed). Never through a link."""
    if out.is_symlink():
        raise InputError(f"{out}: a symbolic link (to {os.readlink(out)}); the demo stage never writes through "
                         "a link: remove the link, or point data.root at its target instead")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory; the demo stage leaves it as it is")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not _older_demo(out):
        raise InputError(f"{out}: holds files the demo stage did not write (no {MARKER}), left untouched: "
                         f"move your data elsewhere and point data.root at it, or remove {out} for the demo set")


def _older_demo(out: Path) -> bool:
    """A demo set written before :data:`MARKER`: train/, test/, truth/ only, demo class and file names."""
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    train = out / "train"
    if not names <= {"train", "test", "truth"} or not train.is_dir() or train.is_symlink():
        return False
    classes = list(train.iterdir())
    return bool(classes) and all(_DEMO_CLASS.fullmatch(c.name) and c.is_dir() and not c.is_symlink()
                                 and all(_DEMO_TRAIN_FILE.fullmatch(f.name) for f in c.iterdir()) for c in classes)


def make_demo(out: str | Path, seed: int = 0, n_train_classes: int = 12, n_test_classes: int = 8,
              train_per_class: int = 10, queries_per_class: int = 3, photos_per_ref_class: int = 3,
              size: int = 96) -> dict:
    """Write the demo set under ``out`` (replacing its train/, test/ and truth/) and return counts.
    ``out`` must be the demo's own folder (:func:`check_demo_folder`); :data:`MARKER` claims it.

    Train classes are ``product-00`` .. ; test classes continue the numbering and never appear
    in train/. Each test class has ``queries_per_class`` query photos and
    ``photos_per_ref_class`` reference photos plus one catalog reference (0 photos is allowed:
    then the catalog image is the only reference).
    """
    counts = dict(n_train_classes=n_train_classes, n_test_classes=n_test_classes,
                  train_per_class=train_per_class, queries_per_class=queries_per_class,
                  photos_per_ref_class=photos_per_ref_class)
    _check_args(seed, counts, size)
    seed, size = int(seed), int(size)
    out = Path(out)
    check_demo_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / MARKER) as tmp:
        tmp.write_text(MARKER_TEXT)

    new_id = _IdMaker(seed)
    stage = Path(tempfile.mkdtemp(prefix=".demo-", dir=out))
    try:
        n_train = _write_train(stage / "train", seed, n_train_classes, train_per_class, size, new_id)
        qrows, rrows = _write_test(stage / "test", seed, range(n_train_classes, n_train_classes + n_test_classes),
                                   queries_per_class, photos_per_ref_class, size, new_id)
        _write_truth(stage / "truth", qrows, rrows)
        _swap_in(stage, out, ("train", "test", "truth"))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"train_images": n_train, "queries": len(qrows), "references": len(rrows),
            "train_classes": n_train_classes, "test_classes": n_test_classes}


class _IdMaker:
    """Opaque image ids of one seed, refused if two ever collide."""

    def __init__(self, seed: int):
        self.seed, self.seen = seed, set()

    def __call__(self, prefix: str, *parts: object) -> str:
        i = _image_id(prefix, self.seed, *parts)
        if i in self.seen:  # 48-bit hashes: practically never, but never silently
            raise RuntimeError(f"demo: id collision for {parts}")
        self.seen.add(i)
        return i


def _write_train(train: Path, seed: int, n_classes: int, per_class: int, size: int, new_id: _IdMaker) -> int:
    """train/<class>/<id>.jpg photos; their count."""
    n = 0
    for c in range(n_classes):
        design = class_design(seed, c)
        folder = train / class_name(c)
        folder.mkdir(parents=True)
        for k in range(per_class):
            _save_jpeg(render_photo(design, _rng(seed, "train", c, k), size), folder / f"{new_id('t', 'train', c, k)}.jpg")
            n += 1
    return n


def _write_test(test: Path, seed: int, classes: range, queries_per_class: int, photos_per_ref_class: int,
                size: int, new_id: _IdMaker) -> tuple[list, list]:
    """test/query and test/reference photos (and each class's catalog image); the (id, label) rows of each."""
    qdir, rdir = test / "query", test / "reference"
    qdir.mkdir(parents=True)
    rdir.mkdir(parents=True)
    qrows, rrows = [], []
    for c in classes:
        design, label = class_design(seed, c), class_name(c)
        for k in range(queries_per_class):
            i = new_id("q", "query", c, k)
            _save_jpeg(render_photo(design, _rng(seed, "query", c, k), size), qdir / f"{i}.jpg")
            qrows.append((i, label))
        for k in range(photos_per_ref_class + 1):
            i = new_id("r", "reference", c, k)
            im = (render_catalog(design, size) if k == photos_per_ref_class
                  else render_photo(design, _rng(seed, "reference", c, k), size))
            _save_jpeg(im, rdir / f"{i}.jpg")
            rrows.append((i, label))
    return qrows, rrows


def _write_truth(truth: Path, qrows: list, rrows: list) -> None:
    truth.mkdir()
    for name, rows in (("query.csv", qrows), ("reference.csv", rrows)):
        with atomic_path(truth / name) as tmp, open(tmp, "w", newline="") as f:
            wr = csv.writer(f, lineterminator="\n")
            wr.writerow(["id", "label"])
            wr.writerows(sorted(rows))


def _swap_in(stage: Path, out: Path, parts: tuple[str, ...]) -> None:
    """Replace ``out``'s ``parts`` by the staged ones: stale files from an earlier run never survive."""
    for part in parts:
        target = out / part
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        (stage / part).rename(target)
