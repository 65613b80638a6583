"""The standardisation report: per source, rows in and out, rows dropped by reason (with a few
examples each), duplicates, answer types and cleaning changes; written as JSON and Markdown."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualcurate.store import atomic_write_bytes

MAX_EXAMPLES = 3


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
                "cleaned": dict(sorted(self.cleaned.items())), "examples": self.examples}


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
                "images": self.images, "llm_clean": self.llm_clean}

    def to_markdown(self) -> str:
        lines = ["| source | domain | rows in | rows out | dropped | duplicates | answer types |",
                 "|---|---|---:|---:|---|---|---|"]
        for name, rep in self.sources.items():
            def fmt(counter: Counter[str]) -> str:
                return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "-"
            lines.append(f"| {name} | {rep.domain} | {rep.rows_in} | {rep.rows_out} | "
                         f"{fmt(rep.dropped)} | {fmt(rep.duplicates)} | "
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
