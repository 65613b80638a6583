"""The run report: a self-contained ``report.html`` (inline CSS/JS, images as data URLs, plots as
inline SVG) and a ``report.md``, written into the run directory.

It reads only the run store (``manifest.json``, the stages' Parquet shards, the image store and
the files stages list as artifacts), so it works for any run, finished or not::

    from dualcurate.report import write_report
    html_path, md_path = write_report("runs/demo")

Sections: stage summary (plugin, status, rows in/out, seconds), the teacher note, the
standardisation of each source (rows read, kept, dropped by reason, near-duplicate conflicts,
example pairs side by side, from a source stage's ``artifacts/standardisation.json``),
verification breakdown (failed generations under "error"), pass-rate histograms, the Dual Tuning table and its scatter plot (Gain_DA against
Gain_CoT with the regions shaded) and a sample browser (image, caption, question, traces,
verdicts, pass rate, region).
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualcurate.schema import row_meta
from dualcurate.store import RunStore

TEMPLATES = Path(__file__).parent / "report_templates"
REGION_COLOURS = {"reasoning-benefit": "#3b6fd8", "direct-benefit": "#2e9d4f",
                  "detrimental": "#d2453c"}
PASS_BINS = ("0", "(0, ¼]", "(¼, ½]", "(½, ¾]", "(¾, 1)", "1")
MAX_ROWS_READ = 20000


@dataclass
class ReportData:
    """Everything the templates show, gathered from one run directory."""

    run_dir: str
    status: str
    recipe_source: str
    stages: list[dict[str, Any]]
    total_seconds: float
    teacher_note: str | None
    verdicts: dict[str, Counter] = field(default_factory=dict)  # domain -> verdict -> n
    reasons: Counter = field(default_factory=Counter)
    pass_rates: dict[str, list[int]] = field(default_factory=dict)  # domain -> bin counts
    pass_bins: tuple[str, ...] = PASS_BINS
    groups: list[dict[str, Any]] = field(default_factory=list)
    efficacy_source: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    scatter_svg: str = ""
    histogram_svgs: dict[str, str] = field(default_factory=dict)
    standardisation: list[dict[str, Any]] = field(default_factory=list)  # one per source stage


def write_report(run_dir: str | Path, samples_per_group: int = 6) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``run_dir``; return their paths. When the
    run has Dual Tuning results, a copy of them goes to ``run_dir/efficacy.json`` too."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from dualcurate.store import atomic_write_bytes, atomic_write_json

    store = RunStore(run_dir, create=False)
    data = collect(store, samples_per_group)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["pct"] = lambda v: "–" if v is None else f"{float(v):.1f}"
    env.filters["tojson_safe"] = lambda v: json.dumps(v).replace("</", "<\\/")
    html_text = env.get_template("report.html.j2").render(d=data, colours=REGION_COLOURS,
                                                          bins=data.pass_bins)
    md_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=False,
                         trim_blocks=True, lstrip_blocks=True)
    md_env.filters["pct"] = env.filters["pct"]
    md_env.filters["cell"] = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    md_text = md_env.get_template("report.md.j2").render(d=data, bins=data.pass_bins)
    html_path, md_path = store.root / "report.html", store.root / "report.md"
    atomic_write_bytes(html_path, html_text.encode())
    atomic_write_bytes(md_path, md_text.encode())
    if data.groups:
        atomic_write_json(store.root / "efficacy.json",
                          {"groups": data.groups, "source": data.efficacy_source})
    return html_path, md_path


# gathering -----------------------------------------------------------------------------------
def collect(store: RunStore, samples_per_group: int = 6) -> ReportData:
    manifest = store.manifest
    stages = [{"name": r["name"], "kind": r.get("kind") or "", "plugin": r.get("plugin"),
               "status": r.get("status"), "rows_in": r.get("rows_in", 0),
               "rows_out": r.get("rows_out", 0), "seconds": float(r.get("seconds") or 0.0),
               "error": r.get("error")} for r in manifest.get("stages", [])]
    data = ReportData(run_dir=str(store.root), status=manifest.get("status", "?"),
                      recipe_source=str(manifest.get("recipe_source") or ""), stages=stages,
                      total_seconds=round(sum(s["seconds"] for s in stages), 1),
                      teacher_note=None)
    by_kind = {s["kind"]: s["name"] for s in stages}
    verifier_rows = _rows(store, by_kind.get("verifier"))
    filter_rows = _rows(store, by_kind.get("filter"))
    data.teacher_note = _teacher_note(stages, verifier_rows or filter_rows)
    data.standardisation = _standardisation(store)
    for row in verifier_rows:
        counts = data.verdicts.setdefault(str(row.get("domain") or "(none)"), Counter())
        for trace in row.get("traces") or []:
            verdict = _verdict(trace)
            counts[verdict] += 1
            if verdict != "correct":
                data.reasons[trace.get("reason") or trace.get("error") or verdict] += 1
    reported = _filter_histograms(manifest, by_kind.get("filter"))
    if reported is not None:  # the filter's own bins: what is known of each sample's rate
        data.pass_bins, data.pass_rates = reported
    else:
        for row in filter_rows:
            rate = row.get("pass_rate")
            if rate is None:
                continue
            bins = data.pass_rates.setdefault(str(row.get("domain") or "(none)"), [0] * 6)
            bins[_pass_bin(float(rate))] += 1
    data.histogram_svgs = {d: histogram_svg(b, data.pass_bins)
                           for d, b in data.pass_rates.items()}
    data.groups, data.efficacy_source = _efficacy(store, by_kind.get("efficacy_judge"))
    if data.groups:
        data.scatter_svg = scatter_svg(data.groups)
    regions = {str(g.get("group")): g.get("region") for g in data.groups}
    data.samples = _samples(store, filter_rows or verifier_rows or _last_rows(store, stages),
                            regions, samples_per_group)
    return data


def _verdict(trace: dict[str, Any]) -> str:
    """A trace's column in the verification table: a failed generation (the engine's error,
    or the verifier's label ``error`` for an error marker) is an error, whatever verdict the
    verifier gave it (rule-verify calls it invalid)."""
    if trace.get("error") or trace.get("label") == "error":
        return "error"
    return trace.get("verdict") or "unverified"


def _standardisation(store: RunStore) -> list[dict[str, Any]]:
    """Per source stage: its ``standardisation.json`` as the templates show it."""
    out = []
    for rec in store.manifest.get("stages", []):
        if rec.get("kind") not in ("source", None, ""):
            continue
        folder = store.stage_dir(rec["name"]) / "artifacts"
        path = folder / "standardisation.json"
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a report never fails on a damaged artifact
        pairs = [(name, kind, pair) for name, src in (doc.get("sources") or {}).items()
                 for kind, items in (src.get("pairs") or {}).items() for pair in items]
        others = _rows_by_id(store, rec["name"], {str(p.get("kept_id")) for _, _, p in pairs
                                                   if p.get("kept_id")})
        sources = []
        for name, src in (doc.get("sources") or {}).items():
            lost = dict(src.get("dropped") or {})
            for kind, n in (src.get("duplicates") or {}).items():
                lost[f"duplicate_{kind}"] = lost.get(f"duplicate_{kind}", 0) + n
            sources.append({
                "name": name, "domain": src.get("domain") or "",
                "location": src.get("location") or "", "rows_in": src.get("rows_in", 0),
                "rows_out": src.get("rows_out", 0), "dropped": dict(sorted(lost.items())),
                "n_dropped": sum(lost.values()), "conflicts": src.get("near_conflicts", 0),
                "warning": src.get("warning"), "examples": src.get("examples") or {}})
        drops = folder / "drops.jsonl"
        out.append({
            "stage": rec["name"], "path": str(path.relative_to(store.root)),
            "drops": str(drops.relative_to(store.root)) if drops.exists() else None,
            "sources": sources, "warnings": doc.get("warnings") or [],
            "pairs": [_pair(store, name, kind, pair, others) for name, kind, pair in pairs]})
    return out


def _rows_by_id(store: RunStore, stage: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The rows of ``stage`` with these ids (question, answer, images)."""
    if not ids:
        return {}
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found: dict[str, dict[str, Any]] = {}
    wanted = pa.array(sorted(ids), pa.string())
    for path in store.shard_files(stage):
        try:
            table = pq.read_table(path, columns=["id", "question", "answer", "images"])
        except (OSError, pa.ArrowInvalid, KeyError):
            continue
        for row in table.filter(pc.is_in(table.column("id"), value_set=wanted)).to_pylist():
            found[row["id"]] = row
        if len(found) == len(ids):
            break
    return found


def _image_urls(store: RunStore, digests: Iterable[str]) -> list[str]:
    from dualcurate.export import _MIME, image_extension

    urls = []
    for digest in digests or []:
        if store.images.has(digest):
            data = store.images.get(digest)
            mime = _MIME.get(image_extension(data[:16]), "image/png")
            urls.append(f"data:{mime};base64," + base64.b64encode(data).decode())
    return urls


def _pair(store: RunStore, source: str, kind: str, pair: dict[str, Any],
          others: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One example pair: the row the index flagged and the row it matched, side by side."""
    other = others.get(str(pair.get("kept_id")), {})
    other_images = other.get("images") or pair.get("kept_images") or []
    where = f"line {pair['line']}" if pair.get("line") is not None else "no line"
    return {
        "source": source, "kind": kind,
        "title": ("near-duplicate: dropped" if kind == "near"
                  else "conflict (answers differ): both kept"),
        "row": {"label": f"{'dropped' if kind == 'near' else 'kept'} ({where})",
                "question": pair.get("question") or "", "answer": pair.get("answer") or "",
                "images": _image_urls(store, pair.get("images") or []),
                "image_paths": [f"images/{d[:2]}/{d}" for d in pair.get("images") or []]},
        "other": {"label": (f"kept in its place (id {pair.get('kept_id')})" if kind == "near"
                            else f"kept (id {pair.get('kept_id')})"),
                  "question": other.get("question") or "", "answer": other.get("answer") or "",
                  "images": _image_urls(store, other_images),
                  "image_paths": [f"images/{d[:2]}/{d}" for d in other_images]},
    }


def _rows(store: RunStore, stage: str | None) -> list[dict[str, Any]]:
    if not stage:
        return []
    rows: list[dict[str, Any]] = []
    for table in store.iter_tables(stage):
        rows.extend(table.slice(0, MAX_ROWS_READ - len(rows)).to_pylist())
        if len(rows) >= MAX_ROWS_READ:
            break
    return rows


def _last_rows(store: RunStore, stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for stage in reversed(stages):
        if store.finished_shards(stage["name"]):
            return _rows(store, stage["name"])
    return []


def _teacher_note(stages: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str | None:
    reference = any(s["kind"] == "distiller" and s["plugin"] == "reference" for s in stages)
    reference = reference or any(t.get("engine") == "reference" for r in rows[:200]
                                 for t in r.get("traces") or [])
    if not reference:
        return None
    return ("No teacher model was run. The traces are the synthetic source's step-by-step "
            "reference solutions, written in the four-phase format by the `reference` "
            "distiller: they stand in for a teacher offline. Run a real teacher with "
            "`curate --plugin vllm-distill` (or hf-distill / openai-distill).")


def _pass_bin(rate: float) -> int:
    if rate <= 0:
        return 0
    if rate >= 1:
        return 5
    return min(4, 1 + int((rate - 1e-9) // 0.25))


def efficacy_groups(run_dir: str | Path) -> list[dict[str, Any]]:
    """The Dual Tuning table of a run (one dict per group: B_S, B_L, DT_S, DT_L, Gain_DA,
    Gain_CoT, region, ...); empty when no efficacy judge has results."""
    return _efficacy(RunStore(run_dir, create=False), None)[0]


def _efficacy(store: RunStore, stage: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The judge's groups: its ``efficacy.json`` artifact, else the groups in its report."""
    for rec in store.manifest.get("stages", []):
        if rec["name"] != stage and rec.get("kind") != "efficacy_judge":
            continue
        paths = [p for v in (rec.get("artifacts") or {}).values()
                 if str(v).endswith("efficacy.json") for p in (Path(v), store.root / v)]
        paths.append(store.stage_dir(rec["name"]) / "artifacts" / "efficacy.json")
        for path in paths:
            if path.is_file():
                return list(json.loads(path.read_text()).get("groups", [])), str(path)
        groups = (rec.get("report") or {}).get("groups")
        if isinstance(groups, list):
            return list(groups), f"manifest.json ({rec['name']} report)"
    return [], None


def _samples(store: RunStore, rows: list[dict[str, Any]], regions: dict[str, Any],
             per_group: int) -> list[dict[str, Any]]:
    chosen: list[dict[str, Any]] = []
    taken: Counter = Counter()
    for row in sorted(rows, key=lambda r: (r.get("split") == "eval", not r.get("traces"))):
        domain = str(row.get("domain") or "(none)")
        if taken[domain] >= per_group:
            continue
        taken[domain] += 1
        images = []
        for digest in row.get("images") or []:
            if store.images.has(digest):
                images.append("data:image/png;base64,"
                              + base64.b64encode(store.images.get(digest)).decode())
        meta = row_meta(row)
        chosen.append({
            "id": row.get("id"), "domain": domain, "split": row.get("split") or meta.get("split"),
            "question": row.get("question") or "", "answer": row.get("answer") or "",
            "caption": row.get("caption") or "", "images": images,
            "image_paths": [f"images/{d[:2]}/{d}" for d in row.get("images") or []],
            "pass_rate": row.get("pass_rate"), "keep": row.get("keep"),
            "region": regions.get(domain), "corrupted": meta.get("corrupted"),
            "traces": [{"text": t.get("text") or "", "answer": t.get("answer"),
                        "verdict": t.get("verdict"), "method": t.get("method"),
                        "reason": t.get("reason"), "error": t.get("error"),
                        "engine": t.get("engine")} for t in row.get("traces") or []],
        })
    return sorted(chosen, key=lambda s: (s["domain"], s["split"] or ""))


# plots ---------------------------------------------------------------------------------------
def scatter_svg(groups: Iterable[dict[str, Any]], size: int = 420) -> str:
    """Gain_DA (x) against Gain_CoT (y), one labelled point per group, regions shaded."""
    points = [(str(g.get("group")), float(g.get("Gain_DA") or 0.0),
               float(g.get("Gain_CoT") or 0.0), g.get("region")) for g in groups]
    lim = max([10.0] + [abs(v) * 1.15 for _, x, y, _ in points for v in (x, y)])
    margin = 48
    span = size - 2 * margin

    def sx(v: float) -> float:
        return margin + (v + lim) / (2 * lim) * span

    def sy(v: float) -> float:
        return margin + (lim - v) / (2 * lim) * span

    def poly(pts: list[tuple[float, float]], colour: str, name: str) -> str:
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        return (f'<polygon points="{coords}" fill="{colour}" fill-opacity="0.13">'
                f'<title>{name}</title></polygon>')

    L = lim
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="scatter" width="{size}" '
             f'height="{size}" viewBox="0 0 {size} {size}" role="img" '
             f'aria-label="Gain_DA vs Gain_CoT">',
             poly([(-L, 0), (0, 0), (L, L), (-L, L)], REGION_COLOURS["reasoning-benefit"],
                  "reasoning-benefit"),
             poly([(0, -L), (0, 0), (L, L), (L, -L)], REGION_COLOURS["direct-benefit"],
                  "direct-benefit"),
             poly([(-L, -L), (0, -L), (0, 0), (-L, 0)], REGION_COLOURS["detrimental"],
                  "detrimental"),
             f'<rect x="{margin}" y="{margin}" width="{span}" height="{span}" fill="none" '
             f'stroke="#888"/>',
             f'<line x1="{sx(-L)}" y1="{sy(0)}" x2="{sx(L)}" y2="{sy(0)}" stroke="#555"/>',
             f'<line x1="{sx(0)}" y1="{sy(-L)}" x2="{sx(0)}" y2="{sy(L)}" stroke="#555"/>',
             f'<line x1="{sx(-L)}" y1="{sy(-L)}" x2="{sx(L)}" y2="{sy(L)}" stroke="#999" '
             f'stroke-dasharray="4 3"/>',
             f'<text x="{size / 2}" y="{size - 10}" text-anchor="middle" font-size="13">'
             f'Gain_DA (%)</text>',
             f'<text x="14" y="{size / 2}" text-anchor="middle" font-size="13" '
             f'transform="rotate(-90 14 {size / 2})">Gain_CoT (%)</text>',
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


def _filter_histograms(manifest: dict[str, Any], stage: str | None,
                       ) -> tuple[tuple[str, ...], dict[str, list[int]]] | None:
    """The pass-rate histograms a filter stage reported itself (``report.bins`` and
    ``report.by_domain[*].histogram``, as the difficulty filter writes them), if it did."""
    if stage is None:
        return None
    record = next((r for r in manifest.get("stages", []) if r.get("name") == stage), {})
    report = record.get("report") or {}
    bins, groups = report.get("bins"), report.get("by_domain")
    if not isinstance(bins, list) or not isinstance(groups, dict) or not groups:
        return None
    used = [b for b in bins if any((g.get("histogram") or {}).get(b) for g in groups.values())]
    return tuple(used), {str(name or "(none)"): [int((g.get("histogram") or {}).get(b, 0))
                                                 for b in used]
                         for name, g in groups.items()}


def histogram_svg(counts: list[int], labels: tuple[str, ...] = PASS_BINS, width: int = 260,
                  height: int = 120) -> str:
    """Bars of pass-rate bin counts, one per label (" (stopped early)" shown as "*")."""
    width = max(width, 46 * len(counts))
    top = max(counts) or 1
    bar = (width - 20) / len(counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="hist" width="{width}" '
             f'height="{height + 30}" viewBox="0 0 {width} {height + 30}" role="img" '
             f'aria-label="pass-rate histogram">']
    for i, n in enumerate(counts):
        h = (height - 16) * n / top
        x = 10 + i * bar
        parts.append(f'<rect x="{x + 2:.1f}" y="{height - h:.1f}" width="{bar - 4:.1f}" '
                     f'height="{h:.1f}" fill="#5b7fbf"><title>{html.escape(labels[i])}: {n}'
                     f'</title>'
                     f'</rect>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - h - 3:.1f}" font-size="10" '
                     f'text-anchor="middle">{n}</text>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height + 14}" font-size="9" '
                     f'text-anchor="middle">'
                     f'{html.escape(labels[i].replace(" (stopped early)", "*"))}</text>')
    parts.append("</svg>")
    return "".join(parts)
