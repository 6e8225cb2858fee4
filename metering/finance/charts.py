"""Small, dependency-free SVG charts for the HTML report (inline SVG: no JavaScript, no network).

Each function returns one ``<svg>`` element as text. Sizes are in a ``viewBox`` so the charts scale
with the page; text uses the page's font. Values are ``Decimal`` or ``int`` and are only turned into
floats for geometry, never for the numbers printed.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from typing import Any

Number = Decimal | int | float
Formatter = Callable[[Any], str]

INK = "#1f2937"
MUTED = "#6b7280"
GRID = "#e5e7eb"
PALETTE = ("#4f46e5", "#0ea5e9", "#14b8a6", "#f59e0b", "#ef4444", "#8b5cf6", "#ec4899", "#84cc16")
OTHER = "#9ca3af"


@dataclass(frozen=True)
class Series:
    name: str
    color: str


def _f(value: Number) -> float:
    return float(value)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_max(value: float, ticks: int = 4) -> tuple[float, float]:
    """A round axis maximum ≥ ``value`` and its tick step (1, 2, 2.5 or 5 × 10ⁿ)."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * power
        if step * ticks >= value:
            return step * ticks, step
    return 10 * power * ticks, 10 * power


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>" + "".join(body) + "</svg>"
    )


def legend(series: Sequence[Series]) -> str:
    """An HTML legend (swatches and names) to put under a chart."""
    items = "".join(
        f'<span class="key"><i style="background:{s.color}"></i>{escape(s.name)}</span>' for s in series
    )
    return f'<div class="legend">{items}</div>'


def hbar(
    rows: Sequence[tuple[str, str | None, Sequence[Number]]],
    series: Sequence[Series],
    fmt: Formatter,
    label: str,
    width: int = 560,
) -> str:
    """Horizontal (stacked) bars: one row per ``(label, sublabel, values per series)``, largest first
    as given; the total is printed at the end of each bar."""
    if not rows:
        return _empty(label, width)
    two_lines = any(sub for _, sub, _ in rows)
    row_height = 40 if two_lines else 30
    bar_height = 18
    label_width = 170
    value_width = 84
    top = 6
    height = top + row_height * len(rows) + 6
    plot = width - label_width - value_width
    largest = max(sum(_f(v) for v in values) for _, _, values in rows) or 1.0
    body: list[str] = []
    for index, (name, sub, values) in enumerate(rows):
        y = top + index * row_height
        bar_y = y + (row_height - bar_height) / 2
        text_y = bar_y + bar_height / 2
        if sub:
            body.append(
                f'<text x="0" y="{_num(text_y - 3)}" fill="{INK}" font-size="13">'
                f"<title>{escape(name)}</title>{escape(_truncate(name, 24))}</text>"
                f'<text x="0" y="{_num(text_y + 12)}" fill="{MUTED}" font-size="11">{escape(_truncate(sub, 28))}</text>'
            )
        else:
            body.append(
                f'<text x="0" y="{_num(text_y + 4.5)}" fill="{INK}" font-size="13">'
                f"<title>{escape(name)}</title>{escape(_truncate(name, 24))}</text>"
            )
        body.append(f'<rect x="{label_width}" y="{_num(bar_y)}" width="{plot}" height="{bar_height}" rx="3" fill="#f3f4f6"/>')
        x = float(label_width)
        for value, kind in zip(values, series):
            span = plot * _f(value) / largest
            if span <= 0:
                continue
            body.append(
                f'<rect x="{_num(x)}" y="{_num(bar_y)}" width="{_num(max(span, 1.5))}" height="{bar_height}" '
                f'fill="{kind.color}"><title>{escape(name)} — {escape(kind.name)}: {escape(fmt(value))}</title></rect>'
            )
            x += span
        total = sum((v for v in values), Decimal(0) if isinstance(values[0], Decimal) else 0)
        body.append(
            f'<text x="{width}" y="{_num(text_y + 4.5)}" text-anchor="end" fill="{INK}" font-size="13" '
            f'font-weight="600" class="num">{escape(fmt(total))}</text>'
        )
    return _svg(width, int(height), body, label)


def _middle(text: str, limit: int) -> str:
    """``text`` cut in the middle when longer than ``limit`` (model names differ at both ends)."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    return text[: keep - keep // 2] + "…" + text[len(text) - keep // 2:]


def pairs(
    rows: Sequence[tuple[str, str, Sequence[Number | None]]],
    series: Sequence[Series],
    fmt: Formatter,
    label: str,
    width: int = 900,
) -> str:
    """One row per ``(label, sublabel, values)`` with one thin bar per series side by side (billed
    next to metered: values that are compared, never stacked), each with its amount. The label is
    cut only in the middle beyond 56 characters and the sublabel (what tells rows apart: kind, tier,
    resource) beyond 64; both are whole in the tooltip. A ``None`` value (unknown) draws no bar."""
    if not rows:
        return _empty(label, width)
    bar_height = 11
    gap = 3
    row_height = max(len(series) * (bar_height + gap) + 10, 38)
    label_width = 330
    value_width = 110
    top = 4
    height = top + row_height * len(rows) + 4
    plot = width - label_width - value_width - 8
    largest = max((max((_f(v) for v in values if v is not None), default=0.0) for _, _, values in rows),
                  default=0.0) or 1.0
    body: list[str] = []
    for index, (name, sub, values) in enumerate(rows):
        y = top + index * row_height
        if index:
            body.append(f'<line x1="0" x2="{width}" y1="{_num(y)}" y2="{_num(y)}" stroke="{GRID}"/>')
        body.append(
            f'<text x="0" y="{_num(y + 17)}" fill="{INK}" font-size="13"><title>{escape(name)} — {escape(sub)}</title>'
            f"{escape(_middle(name, 56))}</text>"
            f'<text x="0" y="{_num(y + 33)}" fill="{MUTED}" font-size="11.5">{escape(_middle(sub, 64))}</text>'
        )
        bars_top = y + (row_height - len(series) * (bar_height + gap) + gap) / 2
        for position, (value, kind) in enumerate(zip(values, series)):
            bar_y = bars_top + position * (bar_height + gap)
            span = plot * max(_f(value or 0), 0.0) / largest
            if span > 0:
                body.append(
                    f'<rect x="{label_width}" y="{_num(bar_y)}" width="{_num(max(span, 1.5))}" height="{bar_height}" '
                    f'rx="2" fill="{kind.color}"><title>{escape(name)} — {escape(kind.name)}: {escape(fmt(value))}</title></rect>'
                )
            body.append(
                f'<text x="{width}" y="{_num(bar_y + bar_height - 1.5)}" text-anchor="end" fill="{INK}" font-size="11.5" '
                f'class="num">{escape(kind.name.lower())} {escape(fmt(value))}</text>'
            )
    return _svg(width, int(height), body, label)


def columns(
    points: Sequence[tuple[str, Sequence[Number]]],
    series: Sequence[Series],
    fmt_axis: Formatter,
    fmt_value: Formatter,
    label: str,
    x_label: Callable[[int, str], str | None] | None = None,
    width: int = 560,
    height: int = 240,
) -> str:
    """Vertical (stacked) columns over a sequence of points (e.g. days), with a value axis and
    gridlines. ``x_label(index, key)`` returns the text under a column, or None for none."""
    if not points:
        return _empty(label, width)
    left, right, top, bottom = 56, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    largest = max(sum(_f(v) for v in values) for _, values in points)
    axis_max, step = nice_max(largest)
    body: list[str] = []
    ticks = int(round(axis_max / step))
    for i in range(ticks + 1):
        value = step * i
        y = top + plot_h - plot_h * value / axis_max
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{_num(y)}" y2="{_num(y)}" stroke="{GRID}"/>')
        body.append(
            f'<text x="{left - 8}" y="{_num(y + 4)}" text-anchor="end" fill="{MUTED}" font-size="11" class="num">'
            f"{escape(fmt_axis(value))}</text>"
        )
    slot = plot_w / len(points)
    bar = max(min(slot * 0.72, 28), 1.0)
    for index, (key, values) in enumerate(points):
        x = left + slot * index + (slot - bar) / 2
        base = top + plot_h
        total = sum(_f(v) for v in values)
        tip = f"{key}: " + ", ".join(f"{s.name} {fmt_value(v)}" for s, v in zip(series, values) if _f(v))
        for value, kind in zip(values, series):
            span = plot_h * _f(value) / axis_max
            if span <= 0:
                continue
            base -= span
            body.append(
                f'<rect x="{_num(x)}" y="{_num(base)}" width="{_num(bar)}" height="{_num(max(span, 1))}" '
                f'fill="{kind.color}"><title>{escape(tip if total else key)}</title></rect>'
            )
        text = x_label(index, key) if x_label else key
        if text:
            body.append(
                f'<text x="{_num(x + bar / 2)}" y="{height - 8}" text-anchor="middle" fill="{MUTED}" font-size="11">'
                f"{escape(text)}</text>"
            )
    body.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#9ca3af"/>'
    )
    return _svg(width, height, body, label)


def mix(
    bars: Sequence[tuple[str, Sequence[Number]]],
    names: Sequence[str],
    colors: Sequence[str],
    label: str,
    width: int = 560,
) -> str:
    """100 % stacked horizontal bars (e.g. share of cost and share of tokens by model), one per
    ``(label, values per name)``; segments wide enough carry their percentage."""
    label_width = 64
    bar_height = 30
    gap = 18
    height = len(bars) * (bar_height + gap) - gap + 4
    plot = width - label_width
    body: list[str] = []
    for index, (title, values) in enumerate(bars):
        y = 2 + index * (bar_height + gap)
        body.append(
            f'<text x="0" y="{_num(y + bar_height / 2 + 4.5)}" fill="{INK}" font-size="13" font-weight="600">'
            f"{escape(title)}</text>"
        )
        total = sum(_f(v) for v in values)
        if total <= 0:
            body.append(f'<rect x="{label_width}" y="{y}" width="{plot}" height="{bar_height}" rx="4" fill="#f3f4f6"/>')
            body.append(f'<text x="{label_width + 8}" y="{_num(y + bar_height / 2 + 4.5)}" fill="{MUTED}" '
                        f'font-size="12">none</text>')
            continue
        x = float(label_width)
        clip = f"clip-{zlib.crc32(label.encode()):08x}-{index}"
        body.append(f'<clipPath id="{clip}"><rect x="{label_width}" y="{y}" width="{plot}" height="{bar_height}" rx="4"/></clipPath>')
        segments = []
        for value, name, color in zip(values, names, colors):
            share = _f(value) / total
            span = plot * share
            if span <= 0:
                continue
            segments.append(
                f'<rect x="{_num(x)}" y="{y}" width="{_num(span)}" height="{bar_height}" fill="{color}" '
                f'stroke="#ffffff" stroke-width="1"><title>{escape(name)}: {share:.1%} of {escape(title.lower())}</title></rect>'
            )
            if span >= 44:
                segments.append(
                    f'<text x="{_num(x + span / 2)}" y="{_num(y + bar_height / 2 + 4.5)}" text-anchor="middle" '
                    f'fill="#ffffff" font-size="12" font-weight="600" class="num">{share:.0%}</text>'
                )
            x += span
        body.append(f'<g clip-path="url(#{clip})">' + "".join(segments) + "</g>")
    return _svg(width, int(height), body, label)


def _empty(label: str, width: int) -> str:
    return _svg(width, 60, [
        f'<text x="{width / 2}" y="34" text-anchor="middle" fill="{MUTED}" font-size="13">No usage in this period</text>'
    ], label)
