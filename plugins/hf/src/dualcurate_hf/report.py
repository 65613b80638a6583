"""The standardisation report: per source, rows read and kept, rows dropped by reason (with a
few examples each), duplicates (with example pairs), near-duplicate conflicts, answer types
and cleaning changes; written as JSON and Markdown. Every dropped row goes to ``drops.jsonl``
(:class:`DropLog`)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualcurate.store import atomic_write_bytes

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
