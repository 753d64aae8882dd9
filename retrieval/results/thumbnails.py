"""Images for the report: thumbnails, their data URIs, and the PNG grid of query rows (each
query then its top references, framed green or red where labels are known)."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageOps

from retrieval.data.images import load_image
from retrieval.io import InputError

RIGHT, WRONG, UNKNOWN = (46, 160, 67), (207, 34, 46), (140, 140, 140)


def thumbnail(path: Path, size: int) -> Image.Image:
    """A ``size`` x ``size`` RGB thumbnail of the image as the pipeline decodes it
    (:func:`retrieval.data.images.load_image`: EXIF orientation, alpha on white, 16-bit scaled,
    decompression bombs refused), padded, not cropped; a grey square with a red cross for an image
    ``load_image`` refuses (a report never stops on one bad image)."""
    try:
        im = Image.fromarray(load_image(path))
    except InputError:
        return unreadable(size)
    return ImageOps.pad(im, (size, size), color=(245, 245, 245))


def unreadable(size: int) -> Image.Image:
    """The thumbnail of an image that cannot be read: grey, crossed out in red."""
    im = Image.new("RGB", (size, size), (200, 200, 200))
    d = ImageDraw.Draw(im)
    d.line((0, 0, size, size), fill=WRONG, width=2)
    d.line((0, size, size, 0), fill=WRONG, width=2)
    return im


def data_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def mark(query_label: str | None, ref_label: str | None) -> tuple[int, int, int]:
    if query_label is None or ref_label is None:
        return UNKNOWN
    return RIGHT if query_label == ref_label else WRONG


def render_grid(examples: Sequence, path: str | Path, thumb: int, pad: int = 4) -> tuple[int, int]:
    """A PNG: one row per example (:class:`retrieval.results.report.Example`), the query then its
    references, each reference framed green (same label), red (other label) or grey (unknown);
    the query is framed blue; ``thumb``: ``report.thumb``. Returns its size."""
    cols = 1 + max((len(e.ref_ids) for e in examples), default=0)
    cell = thumb + 2 * pad
    gap = pad * 3  # between the query and its references
    width, height = cols * cell + gap, max(len(examples), 1) * cell
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for r, e in enumerate(examples):
        y = r * cell
        frames = [(e.query_image, (31, 111, 235), 0)]
        frames += [(img, mark(e.query_label, lab), cell * (c + 1) + gap)
                   for c, (img, lab) in enumerate(zip(e.ref_images, e.ref_labels))]
        for img, colour, x in frames:
            draw.rectangle((x + 1, y + 1, x + cell - 2, y + cell - 2), fill=colour)  # 1 px white between cells
            grid.paste(thumbnail(img, thumb), (x + pad, y + pad))
    grid.save(path, format="PNG", optimize=True)
    return grid.size
