"""The standardisation report: per source, rows read and kept, rows dropped by reason (with a
few examples each), duplicates (with example pairs), near-duplicate conflicts, answer types
and cleaning changes; written as JSON and Markdown. Every dropped row goes to ``drops.jsonl``
(:class:`DropLog`). The same file makes the Standardisation section of the run report
(:func:`report_sections`, hook ``dualcurate_report_sections`` of the ``hf-dataset`` plugin)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualcurate.store import atomic_write_bytes

if TYPE_CHECKING:
    from dualcurate.report_sections import ReportSection, RunView

MAX_EXAMPLES = 3
MAX_PAIRS = 6


class DropLog:
    """``drops.jsonl``: one JSON object per dropped row (source, file, line, reason, question,
    answer, and for duplicates kept_id). Written to a temporary name and renamed when the
    source finishes, so a reader never sees half a log."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._fh = self._tmp.open("w", encoding="utf-8")
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        self._tmp.replace(self.path)


@dataclass
class SourceReport:
    """Counts for one source."""

    domain: str
    location: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    answer_types: Counter[str] = field(default_factory=Counter)
    cleaned: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    conflicts: int = 0
    pairs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warning: str | None = None

    def add_pair(self, kind: str, record: dict[str, Any]) -> None:
        """Keep the first few near-duplicate (or conflict) pairs as examples."""
        kept = self.pairs.setdefault(kind, [])
        if len(kept) < MAX_PAIRS:
            kept.append({k: (v[:300] if isinstance(v, str) else v) for k, v in record.items()})

    @property
    def kept_fraction(self) -> float:
        return self.rows_out / self.rows_in if self.rows_in else 0.0

    def drop(self, reason: str, example: str) -> None:
        self.dropped[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(example[:300])

    def to_json(self) -> dict[str, Any]:
        return {"domain": self.domain, "location": self.location, "rows_in": self.rows_in,
                "rows_out": self.rows_out, "dropped": dict(sorted(self.dropped.items())),
                "duplicates": dict(sorted(self.duplicates.items())),
                "answer_types": dict(sorted(self.answer_types.items())),
                "cleaned": dict(sorted(self.cleaned.items())), "examples": self.examples,
                "near_conflicts": self.conflicts, "pairs": self.pairs,
                "warning": self.warning}


@dataclass
class StandardisationReport:
    """Counts for every source of one hf-dataset stage, plus image work done."""

    sources: dict[str, SourceReport] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    llm_clean: dict[str, int] = field(default_factory=dict)

    def source(self, name: str, domain: str = "", location: str = "") -> SourceReport:
        if name not in self.sources:
            self.sources[name] = SourceReport(domain=domain, location=location)
        return self.sources[name]

    def totals(self) -> dict[str, Any]:
        total_dropped: Counter[str] = Counter()
        total_dups: Counter[str] = Counter()
        for rep in self.sources.values():
            total_dropped.update(rep.dropped)
            total_dups.update(rep.duplicates)
        return {"rows_in": sum(r.rows_in for r in self.sources.values()),
                "rows_out": sum(r.rows_out for r in self.sources.values()),
                "dropped": dict(sorted(total_dropped.items())),
                "duplicates": dict(sorted(total_dups.items()))}

    def to_json(self) -> dict[str, Any]:
        return {"totals": self.totals(),
                "sources": {n: r.to_json() for n, r in self.sources.items()},
                "images": self.images, "llm_clean": self.llm_clean,
                "warnings": [r.warning for r in self.sources.values() if r.warning]}

    def check_kept(self, min_fraction: float, per_source: dict[str, float | None]
                   ) -> list[str]:
        """Warnings for sources that kept no row, or less than their minimum fraction."""
        out = []
        for name, rep in self.sources.items():
            limit = per_source.get(name)
            limit = min_fraction if limit is None else limit
            reasons = ", ".join(f"{k} {v}" for k, v in
                                (rep.dropped + rep.duplicates).most_common(3)) or "none"
            if rep.rows_out == 0:
                rep.warning = (f"source {name!r} kept 0 of {rep.rows_in} rows read (top "
                               f"reasons: {reasons})")
            elif rep.kept_fraction < limit:
                rep.warning = (f"source {name!r} kept {rep.rows_out} of {rep.rows_in} rows "
                               f"read ({rep.kept_fraction:.0%} < min_kept_fraction "
                               f"{limit:.0%}; top reasons: {reasons})")
            if rep.warning:
                out.append(rep.warning)
        return out

    def console_lines(self) -> list[str]:
        """The per-source summary printed at the end of the source stage."""
        lines = []
        for name, rep in self.sources.items():
            lost = rep.dropped + rep.duplicates
            detail = ", ".join(f"{k} {v}" for k, v in sorted(lost.items())) or "none"
            line = (f"source {name}: read {rep.rows_in}, kept {rep.rows_out}, dropped "
                    f"{sum(lost.values())} ({detail})")
            if rep.conflicts:
                line += f"; {rep.conflicts} conflicts kept (same question, answers differ)"
            lines.append(line)
        return lines

    def to_markdown(self) -> str:
        lines = ["| source | domain | rows read | rows kept | dropped | duplicates | conflicts "
                 "| answer types |", "|---|---|---:|---:|---|---|---:|---|"]
        for name, rep in self.sources.items():
            def fmt(counter: Counter[str]) -> str:
                return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "-"
            lines.append(f"| {name} | {rep.domain} | {rep.rows_in} | {rep.rows_out} | "
                         f"{fmt(rep.dropped)} | {fmt(rep.duplicates)} | {rep.conflicts} | "
                         f"{fmt(rep.answer_types)} |")
        if self.images:
            lines.append("")
            lines.append("Images: " + ", ".join(f"{k} {v}" for k, v in self.images.items()))
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """One log line."""
        t = self.totals()
        dropped = sum(t["dropped"].values())
        dups = sum(t["duplicates"].values())
        reasons = ", ".join(f"{k} {v}" for k, v in t["dropped"].items()) or "none"
        return (f"standardised {t['rows_in']} rows from {len(self.sources)} source(s): "
                f"{t['rows_out']} kept, {dropped} dropped ({reasons}), {dups} duplicates")

    def write(self, workdir: Path) -> Path:
        """Write ``standardisation.json`` and ``standardisation.md``; return the JSON path."""
        path = Path(workdir) / "standardisation.json"
        atomic_write_bytes(path, json.dumps(self.to_json(), indent=2,
                                            ensure_ascii=False).encode())
        atomic_write_bytes(path.with_suffix(".md"), self.to_markdown().encode())
        return path


# the section of the run report ----------------------------------------------------------------
#: after the stage table (100), before verification (300)
ORDER = 200
SECTION_TITLE = "Standardisation"
_SECTION_HTML = """\
{% for st in stages %}
<p>Stage <b>{{ st.stage }}</b>: counts from <code>{{ st.path }}</code>{% if st.drops %}; every dropped row, with its file line and reason, in <code>{{ st.drops }}</code>{% endif %}.</p>
{% for w in st.warnings %}<p class="note">{{ w }}</p>{% endfor %}
<table class="standardisation-table">
<thead><tr><th>source</th><th>rows read</th><th>kept</th><th>dropped</th><th>dropped by reason</th><th>conflicts kept</th></tr></thead>
<tbody>
{% for src in st.sources %}
<tr{% if src.warning %} class="failed"{% endif %}><td>{{ src.name }}</td><td>{{ src.rows_in }}</td><td>{{ src.rows_out }}</td><td>{{ src.n_dropped }}</td><td>{% for reason, n in src.dropped.items() %}{{ reason }} {{ n }}{% if not loop.last %}, {% endif %}{% else %}–{% endfor %}</td><td>{{ src.conflicts }}</td></tr>
{% endfor %}
</tbody>
</table>
{% for src in st.sources if src.examples %}
<details><summary>examples of drops: {{ src.name }}</summary><ul>
{% for reason, items in src.examples|dictsort %}{% for ex in items %}<li><b>{{ reason }}</b>: {{ ex }}</li>{% endfor %}{% endfor %}
</ul></details>
{% endfor %}
{% if st.pairs %}
<h3>Example pairs</h3>
{% for p in st.pairs %}
<div class="pair {{ p.kind }}" data-source="{{ p.source }}">
<h3{% if p.kind != "near" %} style="color: #8a5a00"{% endif %}>{{ p.source }} · {{ p.title }}</h3>
{% for side in (p.row, p.other) %}
<div class="pair-side">
<div class="meta">{{ side.label }}</div>
{% for src in side.images %}<img src="{{ src }}" alt="image: {{ side.label }}">{% else %}<div class="meta">(no image)</div>{% endfor %}
<p><b>Question:</b> {{ side.question }}<br><b>Answer:</b> {{ side.answer }}</p>
</div>
{% endfor %}
</div>
{% endfor %}
{% endif %}
{% endfor %}
"""
_SECTION_MARKDOWN = """\
{% for st in stages %}
Stage `{{ st.stage }}`: counts from `{{ st.path }}`{% if st.drops %}; every dropped row in `{{ st.drops }}`{% endif %}.

{% for w in st.warnings %}
> **Warning.** {{ w|cell }}

{% endfor %}
| source | rows read | kept | dropped | dropped by reason | conflicts kept |
|---|---:|---:|---:|---|---:|
{% for src in st.sources %}
| {{ src.name|cell }} | {{ src.rows_in }} | {{ src.rows_out }} | {{ src.n_dropped }} | {% for reason, n in src.dropped.items() %}{{ reason }} {{ n }}{% if not loop.last %}, {% endif %}{% else %}–{% endfor %} | {{ src.conflicts }} |
{% endfor %}
{% if st.pairs %}

Example pairs:

| source | pair | row | other row |
|---|---|---|---|
{% for p in st.pairs %}
| {{ p.source|cell }} | {{ p.title }} | {{ p.row.label|cell }}: {{ p.row.question|cell }} → {{ p.row.answer|cell }} {% for path in p.row.image_paths %}![image]({{ path }}){% endfor %} | {{ p.other.label|cell }}: {{ p.other.question|cell }} → {{ p.other.answer|cell }} {% for path in p.other.image_paths %}![image]({{ path }}){% endfor %} |
{% endfor %}
{% endif %}

{% endfor %}
"""


def report_sections(run: RunView) -> list[ReportSection]:
    """The Standardisation section of a run's report (hook ``dualcurate_report_sections``):
    per source stage that wrote ``standardisation.json``, rows read, kept, dropped by reason
    and conflicts kept, the warnings, examples of drops and the example pairs side by side
    (both rows' images). None of it (an empty list) when no stage wrote the file."""
    from jinja2 import Environment

    from dualcurate.report_sections import ReportSection

    stages = standardisation_stages(run)
    if not stages:
        return []
    html_env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    md_env = Environment(autoescape=False, trim_blocks=True, lstrip_blocks=True)
    md_env.filters["cell"] = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    html = html_env.from_string(_SECTION_HTML).render(stages=stages)
    markdown = md_env.from_string(_SECTION_MARKDOWN).render(stages=stages)
    data = {"stages": [{**st, "pairs": [_without_urls(p) for p in st["pairs"]]}
                       for st in stages]}
    return [ReportSection(title=SECTION_TITLE, anchor="standardisation", order=ORDER,
                          html=html, markdown=markdown, data=data)]


def standardisation_stages(run: RunView) -> list[dict[str, Any]]:
    """Per source stage with a ``standardisation.json``: the file as the section shows it
    (a damaged file is skipped: a report never fails on an artifact)."""
    out = []
    for rec in run.stages:
        if rec.get("kind") not in ("source", None, ""):
            continue
        path = run.artifact(rec["name"], "standardisation.json")
        if path is None:
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict):
            continue
        found = [(name, kind, pair) for name, src in (doc.get("sources") or {}).items()
                 for kind, items in (src.get("pairs") or {}).items() for pair in items]
        others = _rows_by_id(run, rec["name"], {str(p["kept_id"]) for _, _, p in found
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
        drops = run.artifact(rec["name"], "drops.jsonl")
        out.append({
            "stage": rec["name"], "path": _relative(run, path),
            "drops": _relative(run, drops) if drops is not None else None,
            "sources": sources, "warnings": doc.get("warnings") or [],
            "pairs": [_pair(run, name, kind, pair, others) for name, kind, pair in found]})
    return out


def _relative(run: RunView, path: Path) -> str:
    try:
        return path.resolve().relative_to(Path(run.root).resolve()).as_posix()
    except ValueError:
        return str(path)


def _rows_by_id(run: RunView, stage: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The rows of ``stage`` with these ids (question, answer, images)."""
    if not ids:
        return {}
    import pyarrow as pa
    import pyarrow.compute as pc

    found: dict[str, dict[str, Any]] = {}
    wanted = pa.array(sorted(ids), pa.string())
    try:
        for table in run.tables(stage, columns=["id", "question", "answer", "images"]):
            if "id" not in table.column_names:
                continue
            for row in table.filter(pc.is_in(table.column("id"),
                                             value_set=wanted)).to_pylist():
                found[row["id"]] = row
            if len(found) == len(ids):
                break
    except (OSError, pa.ArrowInvalid):
        pass  # the pair shows what standardisation.json kept of the other row
    return found


def _pair(run: RunView, source: str, kind: str, pair: dict[str, Any],
          others: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One example pair: the row the index flagged and the row it matched, side by side."""
    other = others.get(str(pair.get("kept_id")), {})
    other_images = other.get("images") or pair.get("kept_images") or []
    where = f"line {pair['line']}" if pair.get("line") is not None else "no line"

    def side(label: str, row: dict[str, Any], images: list[str]) -> dict[str, Any]:
        return {"label": label, "question": row.get("question") or "",
                "answer": row.get("answer") or "",
                "images": [u for u in (run.image_url(d) for d in images) if u],
                "image_paths": [run.image_path(d) for d in images]}

    return {
        "source": source, "kind": kind,
        "title": ("near-duplicate: dropped" if kind == "near"
                  else "conflict (answers differ): both kept"),
        "row": side(f"{'dropped' if kind == 'near' else 'kept'} ({where})", pair,
                    pair.get("images") or []),
        "other": side(f"kept in its place (id {pair.get('kept_id')})" if kind == "near"
                      else f"kept (id {pair.get('kept_id')})", other, other_images),
    }


def _without_urls(pair: dict[str, Any]) -> dict[str, Any]:
    """A pair for the section's ``data``: image paths, not the images."""
    return {**pair, **{key: {k: v for k, v in pair[key].items() if k != "images"}
                       for key in ("row", "other")}}
