"""The run report: a self-contained ``report.html`` (inline CSS/JS, images as data URLs, plots as
inline SVG) and a ``report.md``, written into the run directory.

It reads only the run store (``manifest.json``, the stages' Parquet shards, the image store and
the files stages list as artifacts), so it works for any run, finished or not::

    from dualcurate.report import write_report
    html_path, md_path = write_report("runs/demo")

Core's sections: stage summary (plugin, status, rows in/out, seconds), verification breakdown
(failed generations under "error") and a sample browser (image, caption, question, traces,
verdicts). Around them, every plugin's own sections (hook ``dualcurate_report_sections``,
:mod:`dualcurate.report_sections`), placed by their ``order``: a source's account of what it
read and dropped, a note on where the traces came from, figures, tables, and what they show on
each sample. The same sections end ``curate run`` and ``curate report``
with their summary tables and give the dataset card its paragraphs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualcurate.report_sections import MAX_ROWS_READ, ORDER, ReportSection, RunView, SampleField
from dualcurate.schema import row_meta
from dualcurate.store import RunStore, image_data_url

if TYPE_CHECKING:
    from dualcurate.plugins import PluginHost

TEMPLATES = Path(__file__).parent / "report_templates"
__all__ = ["ORDER", "ReportData", "collect", "report_host", "run_sections", "write_report"]


@dataclass
class ReportData:
    """Everything the templates show, gathered from one run directory."""

    run_dir: str
    status: str
    recipe_source: str
    stages: list[dict[str, Any]]
    total_seconds: float
    verdicts: dict[str, Counter] = field(default_factory=dict)  # domain -> verdict -> n
    reasons: Counter = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    sections: list[ReportSection] = field(default_factory=list)  # the plugins', in order

    @property
    def blocks(self) -> list[str | ReportSection]:
        """Core's sections (by name) and the plugins', in report order (core first on a
        tie)."""
        ranked: list[tuple[int, int, str | ReportSection]] = [
            (at, 0, name) for name, at in ORDER.items() if name != "plugins"]
        ranked += [(s.order, 1, s) for s in self.sections]
        return [block for _, _, block in sorted(ranked, key=lambda r: (r[0], r[1]))]


def report_host(manifest: dict[str, Any] | None = None) -> PluginHost:
    """A plugin host for showing a run: the installed plugins as ``curate`` loads them, plus
    every plugin the run's manifest names that is installed (so a run's own plugins draw
    their sections even with autoload off)."""
    from dualcurate.plugins import PluginHost

    host = PluginHost()
    ensure_run_plugins(host, manifest or {})
    return host


def ensure_run_plugins(host: PluginHost, manifest: dict[str, Any]) -> None:
    """Load into ``host`` the installed plugins the run's manifest names and ``host`` lacks
    (one that is not installed, or fails to import, is skipped: its section is missing)."""
    from dualcurate.errors import DualcurateError

    installed = set(host.entry_points())
    for name in manifest.get("plugins") or {}:
        if name in installed and name not in host.infos and name not in host.blocked:
            try:
                host.load(name, strict=False)
            except DualcurateError:
                continue


def run_sections(run: str | Path | RunStore | RunView,
                 host: PluginHost | None = None) -> list[ReportSection]:
    """Every plugin's sections of a run's report, in report order (hook
    ``dualcurate_report_sections``); ``host`` defaults to :func:`report_host`."""
    view = run if isinstance(run, RunView) else RunView(run)
    if host is None:
        host = report_host(view.manifest)
    else:
        ensure_run_plugins(host, view.manifest)
    return host.report_sections(view)


def write_report(run_dir: str | Path, samples_per_group: int = 6,
                 host: PluginHost | None = None,
                 sections: list[ReportSection] | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``run_dir``; return their paths. Plugin
    sections come from ``sections`` when given (already drawn, e.g. for the CLI's summary),
    else from :func:`run_sections` with ``host``; the files they list are written too."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from dualcurate.store import atomic_write_bytes

    store = RunStore(run_dir, create=False)
    if sections is None:
        sections = run_sections(store, host)
    data = collect(store, samples_per_group, sections)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                      lstrip_blocks=True)
    html_text = env.get_template("report.html.j2").render(d=data)
    md_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=False,
                         trim_blocks=True, lstrip_blocks=True)
    md_env.filters["cell"] = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    md_text = md_env.get_template("report.md.j2").render(d=data)
    html_path, md_path = store.root / "report.html", store.root / "report.md"
    atomic_write_bytes(html_path, html_text.encode())
    atomic_write_bytes(md_path, md_text.encode())
    for section in sections:
        for name, text in section.files.items():
            atomic_write_bytes(store.root / name, text.encode())
    return html_path, md_path


# gathering -----------------------------------------------------------------------------------
def collect(store: RunStore, samples_per_group: int = 6,
            sections: list[ReportSection] | None = None) -> ReportData:
    """What core's sections show of a run (plugin ``sections`` are carried as given)."""
    manifest = store.manifest
    stages = [{"name": r["name"], "kind": r.get("kind") or "", "plugin": r.get("plugin"),
               "status": r.get("status"), "rows_in": r.get("rows_in", 0),
               "rows_out": r.get("rows_out", 0), "seconds": float(r.get("seconds") or 0.0),
               "error": r.get("error")} for r in manifest.get("stages", [])]
    data = ReportData(run_dir=str(store.root), status=manifest.get("status", "?"),
                      recipe_source=str(manifest.get("recipe_source") or ""), stages=stages,
                      total_seconds=round(sum(s["seconds"] for s in stages), 1),
                      sections=list(sections or []))
    by_kind = {s["kind"]: s["name"] for s in stages}
    verifier_rows = _rows(store, by_kind.get("verifier"))
    for row in verifier_rows:
        counts = data.verdicts.setdefault(str(row.get("domain") or "(none)"), Counter())
        for trace in row.get("traces") or []:
            verdict = _verdict(trace)
            counts[verdict] += 1
            if verdict != "correct":
                data.reasons[trace.get("reason") or trace.get("error") or verdict] += 1
    if samples_per_group > 0:
        fields = [f for section in data.sections for f in section.sample_fields]
        rows = _rows(store, by_kind.get("filter")) or verifier_rows or _last_rows(store, stages)
        data.samples = _samples(store, rows, fields, samples_per_group)
    return data


def _verdict(trace: dict[str, Any]) -> str:
    """A trace's column in the verification table: a failed generation (the engine's error,
    or the verifier's label ``error`` for an error marker) is an error, whatever verdict the
    verifier gave it (rule-verify calls it invalid)."""
    if trace.get("error") or trace.get("label") == "error":
        return "error"
    return trace.get("verdict") or "unverified"


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


def _samples(store: RunStore, rows: list[dict[str, Any]], fields: list[SampleField],
             per_group: int) -> list[dict[str, Any]]:
    """Up to ``per_group`` rows per domain for the sample browser (training rows and rows
    with traces first), each with what the plugin sections show on it (``fields``)."""
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
                images.append(image_data_url(store.images.get(digest), default="image/png"))
        meta = row_meta(row)
        chosen.append({
            "id": row.get("id"), "domain": domain, "split": row.get("split") or meta.get("split"),
            "question": row.get("question") or "", "answer": row.get("answer") or "",
            "caption": row.get("caption") or "", "images": images,
            "image_paths": [f"images/{d[:2]}/{d}" for d in row.get("images") or []],
            "keep": row.get("keep"), "corrupted": meta.get("corrupted"),
            "fields": [_field(f, row, domain) for f in fields],
            "traces": [{"text": t.get("text") or "", "answer": t.get("answer"),
                        "verdict": t.get("verdict"), "method": t.get("method"),
                        "reason": t.get("reason"), "error": t.get("error"),
                        "engine": t.get("engine")} for t in row.get("traces") or []],
        })
    return sorted(chosen, key=lambda s: (s["domain"], s["split"] or ""))


def _field(spec: SampleField, row: dict[str, Any], group: str) -> dict[str, Any]:
    text = spec.value(row, group)
    return {"label": spec.label, "text": text,
            "colour": spec.colours.get(text) if text is not None else None,
            "badge": bool(spec.colours)}
