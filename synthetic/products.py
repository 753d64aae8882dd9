"""The made-up products of the synthetic set, and their drawing.

Every class is a made-up product: a silhouette (box, bottle, can, pouch or jar) in two or
three colours from a shared palette, with a surface pattern, a logo and text-like bars.
Its design (:func:`class_design`) is a pure function of ``(seed, class index)``;
:func:`render_design` draws it alone on a transparent canvas. Every random draw of the set
comes from a generator of its own (:func:`seeded_rng`), seeded from what it is for.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

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


@dataclass(frozen=True)
class Design:
    """What a class's product looks like: everything :func:`render_design` draws from."""
    shape: str
    pattern: str
    logo: str
    colors: tuple[tuple[int, int, int], ...]  # body, pattern, accent
    params: tuple[float, ...]                 # layout numbers in [0, 1), pattern-specific


def _hash_int(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:16], "little")


def seeded_rng(*parts: object) -> np.random.Generator:
    """A PCG64 generator seeded from ``parts`` (e.g. ``(seed, "train", class, k)``): the same
    parts, the same draws, whatever else was drawn before."""
    return np.random.Generator(np.random.PCG64(_hash_int("demo-rng", *parts)))


def class_design(seed: int, index: int) -> Design:
    """The design of class ``index``: shape and pattern come from a seeded permutation of all
    shape x pattern pairs (so the first 30 classes never share both), the rest from the class's
    own generator."""
    combos = [(s, p) for s in SHAPES for p in PATTERNS]
    order = seeded_rng(seed, "combos").permutation(len(combos))
    shape, pattern = combos[int(order[index % len(combos)])]
    rng = seeded_rng(seed, "class", index)
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
