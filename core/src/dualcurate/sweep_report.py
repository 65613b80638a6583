"""The sweep report: ``DIR/report.html`` (one self-contained page, the plot as inline SVG) and
``DIR/report.md`` (with the plot beside it as ``accuracy.svg``), comparing a sweep's variants
from ``sweep.json`` and the variants' run directories.

What it shows, one row per variant: the overrides and which stages were computed or reused,
rows kept per stage, the verification rate, each plugin section's summary table (pass-rate
distributions, the Dual Tuning table, whatever else the variants' plugins report through
``dualcurate_report_sections``) and a plot of the student's accuracy per group against the
swept value.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from dualcurate.store import atomic_write_bytes
from dualcurate.sweep import ACCURACY_KEYS, SWEEP_FILE, toml_value

__all__ = ["accuracy_svg", "sweep_tables", "write_sweep_report"]

PALETTE = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
DASH = {"DT_L": "", "DT_S": "5,4"}


def _overrides_text(entry: dict[str, Any]) -> str:
    return ", ".join(f"{k}={toml_value(v)}" for k, v in entry.get("overrides", {}).items())


def _x_labels(index: dict[str, Any]) -> tuple[str, list[str]]:
    """The plot's x axis: the swept value when one key varies, else the variant's name."""
    grid = index.get("grid") or {}
    variants = index.get("variants") or []
    if len(grid) == 1:
        key = next(iter(grid))
        return key, [toml_value(e["overrides"].get(key)) for e in variants]
    return "variant", [e["name"] for e in variants]


def sweep_tables(index: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, columns, rows) of text cells."""
    variants = index.get("variants") or []
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    tables.append(("Variants", ["variant", "overrides", "status", "computed", "reused",
                                "seconds"],
                   [[e["name"], _overrides_text(e), e.get("status", "?"),
                     ", ".join(s for s, how in e.get("stages", {}).items() if how == "computed"),
                     ", ".join(s for s, how in e.get("stages", {}).items() if how == "reused"),
                     str((e.get("metrics") or {}).get("seconds", ""))] for e in variants]))
    stages: list[str] = []
    for e in variants:
        for name in (e.get("metrics") or {}).get("rows", {}):
            if name not in stages:
                stages.append(name)
    if stages:
        tables.append(("Rows kept per stage (* reused)", ["variant", *stages],
                       [[e["name"], *[_rows_cell(e, s) for s in stages]] for e in variants]))
    if any((e.get("metrics") or {}).get("verified") for e in variants):
        domains = sorted({d for e in variants for d in
                          ((e.get("metrics") or {}).get("verified") or {}).get("by_domain", {})})
        rows = []
        for e in variants:
            v = (e.get("metrics") or {}).get("verified") or {}
            rows.append([e["name"], str(v.get("traces", "")), str(v.get("correct", "")),
                         _pct(v.get("rate")),
                         *[_pct((v.get("by_domain") or {}).get(d)) for d in domains]])
        tables.append(("Verification (traces judged correct)",
                       ["variant", "traces", "correct", "rate", *domains], rows))
    groups = sorted({g for e in variants for g in (e.get("metrics") or {}).get("accuracy", {})})
    if groups:
        columns = ["variant", *[f"{g} {k}" for g in groups for k in ACCURACY_KEYS]]
        rows = [[e["name"], *[_num(((e.get("metrics") or {}).get("accuracy", {}).get(g) or {})
                                   .get(k)) for g in groups for k in ACCURACY_KEYS]]
                for e in variants]
        tables.append(("Student accuracy per group (%)", columns, rows))
    titles: list[str] = []
    for e in variants:
        for title in (e.get("metrics") or {}).get("sections", {}):
            if title not in titles:
                titles.append(title)
    for title in titles:
        # the variants' columns by name (a section may show more columns for one variant than
        # another: the Dual Tuning table's Img_S/Img_L for one with image groups, say)
        columns: list[str] = ["variant"]
        cells: list[tuple[str, dict[str, str]]] = []
        for e in variants:
            summary = ((e.get("metrics") or {}).get("sections") or {}).get(title)
            if not summary:
                continue
            columns += [c for c in summary["columns"] if c not in columns]
            cells.extend((e["name"], dict(zip(summary["columns"], map(str, row), strict=False)))
                         for row in summary["rows"])
        tables.append((title, columns,
                       [[name, *[by_column.get(c, "") for c in columns[1:]]]
                        for name, by_column in cells]))
    return tables


def _rows_cell(entry: dict[str, Any], stage: str) -> str:
    rows = (entry.get("metrics") or {}).get("rows", {}).get(stage)
    if rows is None:
        return ""
    return f"{rows}*" if entry.get("stages", {}).get(stage) == "reused" else str(rows)


def _pct(value: Any) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _num(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def accuracy_svg(index: dict[str, Any], width: int = 560, height: int = 300) -> str | None:
    """Each group's accuracy (``ACCURACY_KEYS``: solid DT_L, dashed DT_S) against the swept
    value, one point per variant; None when no variant has accuracies."""
    variants = index.get("variants") or []
    series: dict[tuple[str, str], list[float | None]] = {}
    for i, e in enumerate(variants):
        for group, values in ((e.get("metrics") or {}).get("accuracy") or {}).items():
            for key in ACCURACY_KEYS:
                if key in values:
                    series.setdefault((group, key), [None] * len(variants))[i] = \
                        float(values[key])
    if not series:
        return None
    axis, labels = _x_labels(index)
    left, right, top, bottom = 48, 150, 16, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(variants)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - v / 100)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
             f'stroke="#999"/>']
    for tick in range(0, 101, 25):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}" stroke="#eee"/><text x="{left - 6}" '
                     f'y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>')
    for i, label in enumerate(labels):
        short = label if len(label) <= 28 else label[:27] + "…"
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                     f"{html.escape(short)}</text>")
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">'
                 f"{html.escape(axis)}</text>")
    parts.append(f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">accuracy (%)</text>')
    groups = sorted({g for g, _ in series})
    for (group, key), values in sorted(series.items()):
        colour = PALETTE[groups.index(group) % len(PALETTE)]
        points = [(x(i), y(v)) for i, v in enumerate(values) if v is not None]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        dash = f' stroke-dasharray="{DASH.get(key, "2,2")}"' if DASH.get(key, "2,2") else ""
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"{dash}/>')
        parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>'
                  for px, py in points]
    for j, (group, key) in enumerate(sorted(series)):
        colour = PALETTE[groups.index(group) % len(PALETTE)]
        ly = top + 10 + 16 * j
        dash = f' stroke-dasharray="{DASH.get(key, "2,2")}"' if DASH.get(key, "2,2") else ""
        parts.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 34}" y1="{ly}" '
                     f'y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>'
                     f'<text x="{left + plot_w + 38}" y="{ly + 4}">'
                     f"{html.escape(f'{group} {key}')}</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    def cell(v: str) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(c) for c in columns) + " |",
           "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _html_table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
       "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
       "font-size:13px}th{background:#f3f3f3}code{background:#f3f3f3;padding:0 3px}")


def write_sweep_report(out: str | Path) -> tuple[Path, Path]:
    """Write ``report.html``, ``report.md`` (and ``accuracy.svg`` when there are
    accuracies) into the sweep directory ``out`` from its ``sweep.json``."""
    out = Path(out)
    index = json.loads((out / SWEEP_FILE).read_text())
    tables = sweep_tables(index)
    svg = accuracy_svg(index)
    grid = ", ".join(f"{k} = {toml_value(v)}" for k, v in (index.get("grid") or {}).items())
    intro = (f"Recipe `{index.get('recipe')}`, grid {grid}"
             + (f", every variant with --set {' '.join(index['sets'])}" if index.get("sets")
                else "")
             + f". One run directory per variant under `{out}`; stages marked reused were "
               f"computed once by another variant with the same signature and are shared "
               f"(hard links), and all variants share one request cache.")
    caption = ("Student accuracy per group against the swept value (solid: DT_L, step by "
               "step; dashed: DT_S, direct).")
    md = [f"# Sweep: {out.name}", "", intro, ""]
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep "
            f"{html.escape(out.name)}</title><style>{CSS}</style></head><body>",
            f"<h1>Sweep: {html.escape(out.name)}</h1><p>{html.escape(intro)}</p>"]
    for title, columns, rows in tables:
        md += [f"## {title}", "", _md_table(columns, rows), ""]
        page.append(f"<h2>{html.escape(title)}</h2>{_html_table(columns, rows)}")
        if title.startswith("Student accuracy") and svg:
            md += ["![accuracy against the swept value](accuracy.svg)", "", caption, ""]
            page.append(f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption>"
                        f"</figure>")
    page.append("</body></html>")
    html_path, md_path = out / "report.html", out / "report.md"
    if svg:
        atomic_write_bytes(out / "accuracy.svg", svg.encode())
    atomic_write_bytes(html_path, "\n".join(page).encode())
    atomic_write_bytes(md_path, "\n".join(md).encode())
    return html_path, md_path
