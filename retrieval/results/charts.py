"""Charts of a run as inline SVG, for the report page: no plotting library, plain strings.

Two primitives, :func:`line_chart` (series as polylines, marked points) and :func:`bar_chart`
(horizontal bars), draw into a :class:`Frame` that maps data onto pixels; the report's charts
are built from them: :func:`curve_chart` (a fold's validation mAP@1000 by epoch, from train's
history.csv, with epoch 0, the kept model and the WiSE-FT mixes marked), :func:`ablation_chart`
(rerank's ablation.csv) and :func:`wall_chart` (each stage's wall time). Coordinates are written
to 0.1 px, so a chart is the same string for the same figures.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Sequence

from retrieval.metrics import MAP, VAL_MAP

FONT = "font-family='system-ui,sans-serif' font-size='11'"
BLUE, GREY, ORANGE, GREEN, INK = "#1f6feb", "#8c959f", "#d4700a", "#2ea043", "#1f2328"


@dataclass(frozen=True)
class Frame:
    """The plotting area of a ``width`` x ``height`` chart (margins around it) and the data
    ranges mapped onto it; SVG's y axis points down."""
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    width: int = 440
    height: int = 260
    left: int = 48
    right: int = 16
    top: int = 28
    bottom: int = 40

    def x(self, v: float) -> float:
        lo, hi = self.x_range
        return self.left + (v - lo) / ((hi - lo) or 1.0) * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        lo, hi = self.y_range
        return self.top + (hi - v) / ((hi - lo) or 1.0) * (self.height - self.top - self.bottom)

    def point(self, x: float, y: float) -> str:
        return f"{self.x(x):.1f},{self.y(y):.1f}"


@dataclass(frozen=True)
class Series:
    """A polyline with a dot at each point."""
    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: str = BLUE


@dataclass(frozen=True)
class Mark:
    """A point called out: ``shape`` ring (around a point), diamond or square, labelled."""
    x: float
    y: float
    label: str
    shape: str = "ring"
    colour: str = INK


def padded_range(values: Sequence[float], step: float = 0.1, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
    """The multiples of ``step`` just around ``values`` (at least one step apart), within [lo, hi]."""
    vals = [v for v in values if not math.isnan(v)] or [lo]
    a = max(lo, math.floor(min(vals) / step + 1e-9) * step)
    b = min(hi, math.ceil(max(vals) / step - 1e-9) * step)
    if b - a < step:
        a, b = (a, a + step) if a + step <= hi else (b - step, b)
    return round(a, 10), round(b, 10)


def _text(x: float, y: float, s: str, anchor: str = "start", extra: str = "") -> str:
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' {FONT} {extra}>{html.escape(s)}</text>"


def _svg(frame: Frame, title: str, body: Sequence[str]) -> str:
    head = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{frame.width}' height='{frame.height}' "
            f"viewBox='0 0 {frame.width} {frame.height}' role='img' aria-label='{html.escape(title, quote=True)}'>")
    return "\n".join([head, _text(8, 16, title, extra="font-weight='600'"), *body, "</svg>"])


def _mark(frame: Frame, m: Mark) -> str:
    x, y = frame.x(m.x), frame.y(m.y)
    if m.shape == "ring":
        shape = (f"<circle class='mark' cx='{x:.1f}' cy='{y:.1f}' r='7' fill='none' stroke='{m.colour}' "
                 "stroke-width='2'/>")
    elif m.shape == "diamond":
        pts = f"{x:.1f},{y - 5:.1f} {x + 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x - 5:.1f},{y:.1f}"
        shape = f"<polygon class='mark' points='{pts}' fill='{m.colour}'/>"
    else:
        shape = f"<rect class='mark' x='{x - 4:.1f}' y='{y - 4:.1f}' width='8' height='8' fill='{m.colour}'/>"
    if not m.label:
        return shape
    fits = x + 9 + 6.5 * len(m.label) <= frame.width  # about 6.5 px a character at 11 px
    return shape + _text(x + 9 if fits else x - 9, y - 8, m.label, "start" if fits else "end", f"fill='{m.colour}'")


def line_chart(frame: Frame, series: Sequence[Series], marks: Sequence[Mark], title: str, x_label: str,
               y_label: str, x_ticks: Sequence[float], y_ticks: Sequence[float]) -> str:
    """An SVG line chart: grid lines at the ticks, each series a polyline (NaN points left out)
    with dots, then the marks."""
    body = []
    for v in y_ticks:
        body.append(f"<line x1='{frame.left}' x2='{frame.width - frame.right}' y1='{frame.y(v):.1f}' "
                    f"y2='{frame.y(v):.1f}' stroke='#eaeef2'/>")
        body.append(_text(frame.left - 4, frame.y(v) + 4, f"{v:g}", "end"))
    base = frame.height - frame.bottom
    body += [_text(frame.x(v), base + 14, f"{v:g}", "middle") for v in x_ticks]
    body.append(_text((frame.left + frame.width - frame.right) / 2, base + 30, x_label, "middle"))
    body.append(_text(12, (frame.top + base) / 2, y_label, "middle",
                      f"transform='rotate(-90 12 {(frame.top + base) / 2:.1f})'"))
    for s in series:
        pts = [(x, y) for x, y in zip(s.xs, s.ys) if not math.isnan(y)]
        body.append(f"<polyline class='series' fill='none' stroke='{s.colour}' stroke-width='2' "
                    f"points='{' '.join(frame.point(x, y) for x, y in pts)}'>"
                    f"<title>{html.escape(s.name)}</title></polyline>")
        body += [f"<circle cx='{frame.x(x):.1f}' cy='{frame.y(y):.1f}' r='3' fill='{s.colour}'/>" for x, y in pts]
    body += [_mark(frame, m) for m in marks]
    return _svg(frame, title, body)


def bar_chart(labels: Sequence[str], values: Sequence[float], shown: Sequence[str], title: str,
              colours: Sequence[str] | None = None, width: int = 440, bar: int = 18) -> str:
    """An SVG of horizontal bars from zero, one per label, ``shown`` (each value as text) at the
    bar's end; the longest bar spans the plotting width."""
    frame = Frame((0.0, max(max(values, default=0.0), 1e-12)), (0.0, 1.0), width, 36 + len(labels) * (bar + 6) + 8,
                  left=96, right=70, top=28, bottom=8)
    body = []
    for i, (label, v, s) in enumerate(zip(labels, values, shown)):
        y = frame.top + i * (bar + 6)
        colour = colours[i] if colours else BLUE
        body.append(_text(frame.left - 6, y + bar - 5, label, "end"))
        body.append(f"<rect class='bar' x='{frame.left}' y='{y}' width='{frame.x(v) - frame.left:.1f}' "
                    f"height='{bar}' fill='{colour}'/>")
        body.append(_text(frame.x(v) + 4, y + bar - 5, s))
    return _svg(frame, title, body)


# -- the report's charts -------------------------------------------------------------------------



def curve_chart(history, train: dict, fold: int) -> str:
    """Fold ``fold``'s validation mAP@1000 by epoch (``history``: train's history.csv as a
    DataFrame; several backbones: one line each), epoch 0 (the start) squared, each WiSE-FT mix
    of epoch 0 and the last epoch a diamond at x = alpha x last epoch, the model kept ringed
    (``train``: the fold's train metrics)."""
    members = train.get("members") or {"": train}
    epochs = [float(e) for e in history["epoch"]]
    last = max(epochs, default=0.0)
    series, marks, values = [], [], []
    for i, (name, m) in enumerate(members.items()):
        ys = [float(v) for v in history[VAL_MAP if i == 0 else f"{VAL_MAP}/{name}"]]
        colour = (BLUE, GREEN, "#8250df", "#bf3989")[i % 4]
        series.append(Series(name or VAL_MAP, epochs, ys, colour))
        mixes = {float(a): float(v) for a, v in (m.get(f"wise_{VAL_MAP}") or {}).items()}
        marks += [Mark(a * last, v, "", "diamond", ORANGE) for a, v in sorted(mixes.items())]
        marks.append(Mark(0.0, float(m[f"epoch0_{VAL_MAP}"]), "start" if i == 0 else "", "square", GREY))
        alpha = m.get("wise_alpha")
        kept = (alpha * last, f"kept: mix {alpha:g}") if alpha is not None else (m["best_epoch"], "kept")
        marks.append(Mark(float(kept[0]), float(m[VAL_MAP]), kept[1], "ring", colour))
        values += ys + list(mixes.values())
    frame = Frame((0.0, max(last, 1.0)), padded_range(values))
    lo, hi = frame.y_range
    y_ticks = [round(lo + k * 0.1, 10) for k in range(round((hi - lo) / 0.1) + 1)]
    x_ticks = range(int(last) + 1) if last <= 12 else range(0, int(last) + 1, math.ceil(last / 12))
    return line_chart(frame, series, marks, f"fold {fold}: validation mAP@1000 by epoch", "epoch", "mAP@1000",
                      list(x_ticks), y_ticks)


def ablation_chart(table, fold: int) -> str:
    """Fold ``fold``'s validation mAP@1000 after each re-ranking step alone and the whole chain
    (``table``: rerank's ablation.csv, columns method and map@1000); the chain (``final``) green,
    no re-ranking (``none``) grey."""
    methods = [str(m) for m in table["method"]]
    values = [float(v) for v in table[MAP]]
    colours = [GREEN if m == "final" else GREY if m == "none" else BLUE for m in methods]
    return bar_chart(methods, values, [f"{v:.4f}" for v in values], f"fold {fold}: re-ranking, validation mAP@1000",
                     colours)


def wall_chart(seconds: dict[str, float], duration) -> str:
    """Each stage's wall time (``seconds``, folds added up), ``duration`` formatting the figures."""
    return bar_chart(list(seconds), list(seconds.values()), [duration(s) for s in seconds.values()],
                     "wall time of each stage (folds added up)")
