"""Small inline-SVG charts for self-contained reports: no JavaScript, no network, no plotting dependency.

Every chart is a function from plain numbers to an ``<svg>`` string: :func:`interval_chart` (estimates
with confidence intervals and a reference line: win rates), :func:`scatter_chart` (points with error bars
and optional curves: the reward-vs-KL plane, best-of-n), :func:`histogram_chart` (overlaid step
histograms on shared bins: rewards, lengths). Every text that reaches the SVG (titles, labels, legend
entries) is XML-escaped, so a checkpoint name cannot inject markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

__all__ = ["PALETTE", "histogram_chart", "interval_chart", "nice_ticks", "scatter_chart"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_FONT = 'font-family="Helvetica, Arial, sans-serif"'


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values from at or below ``lo`` to at or above ``hi`` (about ``count`` steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    count_steps = round((last - first) / step)
    return [round(first + k * step, 12) for k in range(count_steps + 1)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


@dataclass
class _Plot:
    """Pixel mapping of a data rectangle inside an SVG of ``width`` x ``height``."""

    width: int
    height: int
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    left: int = 64
    right: int = 16
    top: int = 34
    bottom: int = 46

    def x(self, value: float) -> float:
        span = (self.x_hi - self.x_lo) or 1.0
        return self.left + (value - self.x_lo) / span * (self.width - self.left - self.right)

    def y(self, value: float) -> float:
        span = (self.y_hi - self.y_lo) or 1.0
        return self.height - self.bottom - (value - self.y_lo) / span * (self.height - self.top - self.bottom)

    def frame(self, title: str, x_label: str, y_label: str, x_ticks: Sequence[float] | None,
              y_ticks: Sequence[float] | None, y_tick_labels: Sequence[str] | None = None,
              x_tick_labels: Sequence[str] | None = None) -> list[str]:
        out = [f'<rect x="0" y="0" width="{self.width}" height="{self.height}" fill="#ffffff"/>',
               (f'<text x="{self.width / 2:.1f}" y="20" text-anchor="middle" font-size="14" font-weight="bold" '
                f'{_FONT}>{escape(title)}</text>')]
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#444"/>')
        x_labels = list(x_tick_labels) if x_tick_labels is not None else [_fmt(t) for t in (x_ticks or [])]
        for tick, label in zip(x_ticks or [], x_labels):
            px = self.x(tick)
            out.append(f'<line x1="{px:.1f}" y1="{y1}" x2="{px:.1f}" y2="{y0}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle" font-size="11" {_FONT}>'
                       f'{escape(label)}</text>')
        labels = list(y_tick_labels) if y_tick_labels is not None else [_fmt(t) for t in (y_ticks or [])]
        for tick, label in zip(y_ticks or [], labels):
            py = self.y(tick)
            out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="11" {_FONT}>'
                       f'{escape(label)}</text>')
        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{self.height - 8}" text-anchor="middle" font-size="12" '
                   f'{_FONT}>{escape(x_label)}</text>')
        out.append(f'<text x="14" y="{(y0 + y1) / 2:.1f}" text-anchor="middle" font-size="12" '
                   f'transform="rotate(-90 14 {(y0 + y1) / 2:.1f})" {_FONT}>{escape(y_label)}</text>')
        return out


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>")


def _legend(entries: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    out = []
    for i, (label, color) in enumerate(entries):
        yy = y + 16 * i
        out.append(f'<rect x="{x:.1f}" y="{yy - 9:.1f}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{x + 14:.1f}" y="{yy:.1f}" font-size="11" {_FONT}>{escape(label)}</text>')
    return out


def interval_chart(rows: Sequence[tuple[str, float, float, float]], title: str, x_label: str,
                   reference: float | None = 0.5, x_range: tuple[float, float] = (0.0, 1.0),
                   percent: bool = True, width: int = 720) -> str:
    """One row per (label, estimate, low, high): a dot with its interval; a dashed line at ``reference``."""
    height = 60 + 26 * max(len(rows), 1) + 20
    left = min(300, 20 + 7 * max((len(r[0]) for r in rows), default=10))
    plot = _Plot(width, height, x_range[0], x_range[1], -0.5, len(rows) - 0.5, left=left)
    x_ticks = nice_ticks(*x_range)
    x_tick_labels = [f"{t * 100:.0f}%" for t in x_ticks] if percent else None
    body = plot.frame(title, x_label, "", x_ticks, None, x_tick_labels=x_tick_labels)
    if reference is not None:
        px = plot.x(reference)
        body.append(f'<line x1="{px:.1f}" y1="{plot.top}" x2="{px:.1f}" y2="{height - plot.bottom}" '
                    'stroke="#777" stroke-dasharray="4 3"/>')
    for i, (label, value, low, high) in enumerate(rows):
        py = plot.y(len(rows) - 1 - i)
        color = PALETTE[i % len(PALETTE)]
        body.append(f'<text x="{left - 8}" y="{py + 4:.1f}" text-anchor="end" font-size="12" {_FONT}>'
                    f'{escape(label)}</text>')
        if all(math.isfinite(v) for v in (low, high)):
            body.append(f'<line x1="{plot.x(low):.1f}" y1="{py:.1f}" x2="{plot.x(high):.1f}" y2="{py:.1f}" '
                        f'stroke="{color}" stroke-width="3"/>')
        if math.isfinite(value):
            body.append(f'<circle cx="{plot.x(value):.1f}" cy="{py:.1f}" r="5" fill="{color}"/>')
    return _svg(width, height, body, title)


def scatter_chart(points: Sequence[dict], title: str, x_label: str, y_label: str,
                  curves: Sequence[dict] = (), width: int = 720, height: int = 420) -> str:
    """Labelled points ``{label, x, y, xerr?, yerr?}`` with error bars, plus curves ``{label, x: [...], y: [...]}``."""
    xs = [p["x"] for p in points] + [v for c in curves for v in c["x"]]
    ys = [p["y"] for p in points] + [v for c in curves for v in c["y"]]
    xs += [p["x"] + s * (p.get("xerr") or 0) for p in points for s in (-1, 1)]
    ys += [p["y"] + s * (p.get("yerr") or 0) for p in points for s in (-1, 1)]
    xs = [v for v in xs if math.isfinite(v)] or [0.0, 1.0]
    ys = [v for v in ys if math.isfinite(v)] or [0.0, 1.0]
    pad_x = (max(xs) - min(xs)) * 0.08 or 0.5
    pad_y = (max(ys) - min(ys)) * 0.08 or 0.5
    x_ticks = nice_ticks(min(xs) - pad_x, max(xs) + pad_x)
    y_ticks = nice_ticks(min(ys) - pad_y, max(ys) + pad_y)
    plot = _Plot(width, height, x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1], right=170)
    body = plot.frame(title, x_label, y_label, x_ticks, y_ticks)
    legend: list[tuple[str, str]] = []
    for j, curve in enumerate(curves):
        color = PALETTE[(len(points) + j) % len(PALETTE)]
        pts = " ".join(f"{plot.x(x):.1f},{plot.y(y):.1f}" for x, y in zip(curve["x"], curve["y"])
                       if math.isfinite(x) and math.isfinite(y))
        body.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2" '
                    'stroke-dasharray="6 3"/>')
        legend.append((curve["label"], color))
    for i, p in enumerate(points):
        if not (math.isfinite(p["x"]) and math.isfinite(p["y"])):
            continue
        color = PALETTE[i % len(PALETTE)]
        cx, cy = plot.x(p["x"]), plot.y(p["y"])
        for key, horizontal in (("xerr", True), ("yerr", False)):
            err = p.get(key)
            if err and math.isfinite(err):
                if horizontal:
                    body.append(f'<line x1="{plot.x(p["x"] - err):.1f}" y1="{cy:.1f}" x2="{plot.x(p["x"] + err):.1f}" '
                                f'y2="{cy:.1f}" stroke="{color}" stroke-width="1.5"/>')
                else:
                    body.append(f'<line x1="{cx:.1f}" y1="{plot.y(p["y"] - err):.1f}" x2="{cx:.1f}" '
                                f'y2="{plot.y(p["y"] + err):.1f}" stroke="{color}" stroke-width="1.5"/>')
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{color}" stroke="#222"/>')
        legend.append((p["label"], color))
    body += _legend(legend, width - plot.right + 12, plot.top + 10)
    return _svg(width, height, body, title)


def histogram_chart(series: Sequence[tuple[str, Sequence[float]]], title: str, x_label: str, bins: int = 20,
                    width: int = 720, height: int = 320) -> str:
    """Overlaid step histograms (share of samples per bin) of several samples on shared bins."""
    finite = [np.asarray([v for v in values if math.isfinite(v)], dtype=float) for _, values in series]
    pooled = np.concatenate([f for f in finite if f.size]) if any(f.size for f in finite) else np.array([0.0, 1.0])
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    shares = [np.histogram(f, bins=edges)[0] / max(f.size, 1) for f in finite]
    top = max((float(s.max()) for s in shares if s.size), default=1.0) or 1.0
    x_ticks = nice_ticks(lo, hi)
    y_ticks = nice_ticks(0.0, top * 1.1)
    plot = _Plot(width, height, min(x_ticks[0], lo), max(x_ticks[-1], hi), 0.0, y_ticks[-1], right=170)
    body = plot.frame(title, x_label, "share of samples", x_ticks, y_ticks)
    legend = []
    for i, ((label, _), share) in enumerate(zip(series, shares)):
        color = PALETTE[i % len(PALETTE)]
        pts = [f"{plot.x(edges[0]):.1f},{plot.y(0):.1f}"]
        for k, value in enumerate(share):
            pts += [f"{plot.x(edges[k]):.1f},{plot.y(value):.1f}", f"{plot.x(edges[k + 1]):.1f},{plot.y(value):.1f}"]
        pts.append(f"{plot.x(edges[-1]):.1f},{plot.y(0):.1f}")
        body.append(f'<polyline points="{" ".join(pts)}" fill="{color}" fill-opacity="0.15" stroke="{color}" '
                    'stroke-width="2"/>')
        legend.append((f"{label} (n={finite[i].size})", color))
    body += _legend(legend, width - plot.right + 12, plot.top + 10)
    return _svg(width, height, body, title)
