"""The efficacy scatter: Gain_DA (x) against Gain_CoT (y), one labelled point per group, the
regions shaded. Drawn once, as SVG: the judge's ``efficacy_scatter.svg`` artifact and the
run report's Dual Tuning section are this same drawing."""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dualcurate_dualtuning.metrics import DETRIMENTAL, DIRECT, REASONING
from dualcurate_dualtuning.results import REGION_COLOURS


def scatter_svg(groups: Iterable[dict[str, Any]], size: int = 420, title: str = "",
                absolute: bool = False) -> str:
    """The scatter as an SVG element (inline in HTML, or a file's content). ``groups``: the
    judge's group objects (``group``, ``Gain_DA``, ``Gain_CoT``, ``region``); ``absolute``:
    some gains are absolute points (B* = 0), which the axis labels then say."""
    points = [(str(g.get("group")), float(g.get("Gain_DA") or 0.0),
               float(g.get("Gain_CoT") or 0.0), g.get("region")) for g in groups]
    lim = max([10.0] + [abs(v) * 1.15 for _, x, y, _ in points for v in (x, y)])
    margin = 48
    span = size - 2 * margin
    unit = "%; points where B* = 0" if absolute else "%"

    def sx(v: float) -> float:
        return margin + (v + lim) / (2 * lim) * span

    def sy(v: float) -> float:
        return margin + (lim - v) / (2 * lim) * span

    def poly(pts: list[tuple[float, float]], region: str) -> str:
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        return (f'<polygon points="{coords}" fill="{REGION_COLOURS[region]}" '
                f'fill-opacity="0.13"><title>{region}</title></polygon>')

    L = lim
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="scatter" width="{size}" '
             f'height="{size}" viewBox="0 0 {size} {size}" role="img" '
             f'aria-label="Gain_DA vs Gain_CoT">',
             poly([(-L, 0), (0, 0), (L, L), (-L, L)], REASONING),
             poly([(0, -L), (0, 0), (L, L), (L, -L)], DIRECT),
             poly([(-L, -L), (0, -L), (0, 0), (-L, 0)], DETRIMENTAL),
             f'<rect x="{margin}" y="{margin}" width="{span}" height="{span}" fill="none" '
             f'stroke="#888"/>',
             f'<line x1="{sx(-L)}" y1="{sy(0)}" x2="{sx(L)}" y2="{sy(0)}" stroke="#555"/>',
             f'<line x1="{sx(0)}" y1="{sy(-L)}" x2="{sx(0)}" y2="{sy(L)}" stroke="#555"/>',
             f'<line x1="{sx(-L)}" y1="{sy(-L)}" x2="{sx(L)}" y2="{sy(L)}" stroke="#999" '
             f'stroke-dasharray="4 3"/>',
             f'<text x="{size / 2}" y="{size - 10}" text-anchor="middle" font-size="13">'
             f'Gain_DA ({unit})</text>',
             f'<text x="14" y="{size / 2}" text-anchor="middle" font-size="13" '
             f'transform="rotate(-90 14 {size / 2})">Gain_CoT ({unit})</text>',
             f'<text x="{sx(-L) + 6}" y="{sy(L) + 16}" font-size="11" fill="#234">reasoning'
             f'</text>',
             f'<text x="{sx(L) - 6}" y="{sy(-L) - 8}" font-size="11" text-anchor="end" '
             f'fill="#153">direct</text>',
             f'<text x="{sx(-L) + 6}" y="{sy(-L) - 8}" font-size="11" fill="#622">detrimental'
             f'</text>',
             f'<text x="{sx(-L)}" y="{sy(-L) + 16}" font-size="10" text-anchor="start">'
             f'{-L:.0f}</text>',
             f'<text x="{sx(L)}" y="{sy(-L) + 16}" font-size="10" text-anchor="end">'
             f'{L:.0f}</text>']
    if title:
        parts.append(f'<text x="{size / 2}" y="24" text-anchor="middle" font-size="14" '
                     f'font-weight="600">{html.escape(title)}</text>')
    for name, x, y, region in points:
        colour = REGION_COLOURS.get(str(region), "#444")
        label = html.escape(name)
        parts.append(f'<circle class="point" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6" '
                     f'fill="{colour}" stroke="#222"><title>{label}: Gain_DA {x:.1f}, '
                     f'Gain_CoT {y:.1f} ({html.escape(str(region))})</title></circle>')
        parts.append(f'<text x="{sx(x) + 9:.1f}" y="{sy(y) + 4:.1f}" font-size="12">'
                     f'{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_scatter(groups: Iterable[dict[str, Any]], path: str | Path, title: str = "",
                  absolute: bool = False) -> Path:
    """Write :func:`scatter_svg` to ``path`` as a standalone SVG file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    svg = scatter_svg(groups, title=title, absolute=absolute)
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n", encoding="utf-8")
    return path
