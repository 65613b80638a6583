"""What a plugin adds to a run's report: :class:`ReportSection`, handed back from the hook
``dualcurate_report_sections(run)``, and :class:`RunView`, the read-only run it is given.

One section, drawn once by the plugin that owns its figures, serves everywhere a run is
shown: ``report.html`` (its ``html``), ``report.md`` and the dataset card of ``curate push``
(its ``markdown``), the end of ``curate run`` / ``curate report`` (its ``summary`` table),
and programs (its ``data``)::

    @hookimpl
    def dualcurate_report_sections(self, run: RunView) -> list[ReportSection] | None:
        rows = run.rows("filter", columns=["domain", "score"])
        if not rows:
            return None                       # nothing to show for this run
        return [ReportSection(title="Scores", anchor="scores", order=450,
                              html="<p>...</p>", markdown="...",
                              summary=SummaryTable("Scores", ["domain", "mean"], [...]))]

This module imports only the store and the schema: plugins import it without the host.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from dualcurate.store import RunStore, image_data_url

__all__ = ["MAX_ROWS_READ", "ORDER", "ReportSection", "RunView", "SampleField", "SummaryTable"]

#: Where core's own sections sit, by ``order``: a plugin section sorts among them by its own
#: ``order`` (a stage's section near that stage: below 100 above the stage table, 200 after
#: it for a source's, 450 after verification, 650 after training).
ORDER = {"stages": 100, "verification": 300, "plugins": 500, "samples": 1000}
#: The most rows :meth:`RunView.rows` reads of one stage by default (reports stay fast).
MAX_ROWS_READ = 20000
_ANCHOR = re.compile(r"^[a-z][a-z0-9-]*$")
#: an image's type from its first bytes (for :meth:`RunView.image_url`)
@dataclass
class SummaryTable:
    """A small table printed at the end of ``curate run`` and ``curate report`` (a rich
    table on stderr). Cells are text; columns whose every cell reads as a number are
    right-aligned. ``notes``: lines printed under it, e.g. what its columns mean, so a run
    log reads without the report."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


@dataclass
class SampleField:
    """One thing the report's sample browser shows on each sample card: the value of a row
    ``column`` (numbers with ``digits`` decimals), or a text per group (the row's
    ``domain``) from ``by_group``. A text found in ``colours`` is shown as a badge of that
    background colour."""

    label: str
    column: str | None = None
    by_group: dict[str, str] = field(default_factory=dict)
    colours: dict[str, str] = field(default_factory=dict)
    digits: int = 2

    def value(self, row: dict[str, Any], group: str) -> str | None:
        """The field's text for one row (None: nothing known)."""
        if self.column is not None:
            value = row.get(self.column)
            if value is None:
                return None
            if isinstance(value, float):
                return f"{value:.{self.digits}f}"
            return str(value)
        return self.by_group.get(group)


@dataclass
class ReportSection:
    """A plugin's section of the run report.

    ``title``: the heading; ``anchor``: the HTML id (lowercase, digits, hyphens), unique in
    the report; ``order``: where it sits among the others (see :data:`ORDER`; ties by
    title). ``html``: a fragment placed in the section as it is (trusted: escape what you
    interpolate; figures inline, as SVG or ``data:`` URLs, so the page stays one file);
    ``markdown``: the same for ``report.md`` and the dataset card, without the heading.
    ``summary``: a small table for the end of ``curate run`` / ``curate report``. ``data``:
    the figures as JSON-able values, for programs. ``files``: text files written beside the
    report (name relative to the run directory, e.g. ``efficacy.json``) when it is written.
    ``sample_fields``: what the sample browser shows on each sample. ``plugin``: filled in
    by the host with the name of the plugin (entry point, as ``--plugin`` takes it) that
    added the section; the report's ``data-plugin`` attribute.
    """

    title: str
    anchor: str
    order: int = ORDER["plugins"]
    html: str = ""
    markdown: str = ""
    summary: SummaryTable | None = None
    data: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    sample_fields: list[SampleField] = field(default_factory=list)
    plugin: str = ""

    def __post_init__(self) -> None:
        if not _ANCHOR.match(self.anchor):
            raise ValueError(f"report section {self.title!r}: anchor {self.anchor!r} must be "
                             f"lowercase letters, digits and hyphens, starting with a letter")
        for name in self.files:
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"report section {self.title!r}: file {name!r} must be a "
                                 f"path inside the run directory")


class RunView:
    """A run directory, read-only, as report hooks see it: the manifest (a copy), the stage
    records, the rows of committed shards and the artifacts stages wrote.
    Open one with ``RunView(path)`` or ``RunView(store)``."""

    def __init__(self, run: RunStore | str | Path):
        self._store = run if isinstance(run, RunStore) else RunStore(run, create=False)
        self.root = self._store.root
        self.manifest: dict[str, Any] = copy.deepcopy(self._store.manifest)

    @property
    def stages(self) -> list[dict[str, Any]]:
        """The manifest's stage records, in pipeline order. A record's ``plugin`` is the
        *component* the stage ran (the registered name its recipe names in ``use``, or ``--plugin``
        chose: ``hello-length``), not the plugin (entry point, ``hello``) that registered it:
        the manifest's ``plugins`` lists those, and a section's ``plugin`` is one."""
        return list(self.manifest.get("stages") or [])

    def stage_options(self, stage: str) -> dict[str, Any]:
        """The options stage ``stage`` ran with, as validated: defaults filled in, runtime
        options included, component references as dicts (``{"use": "hf", "model": ...}``);
        what ``curate validate --explain`` lists. Empty for a stage the run does not have.
        A report section reads its own stage's options here."""
        recorded = (self.manifest.get("recipe") or {}).get(stage)
        if not isinstance(recorded, dict):
            return {}
        return {k: v for k, v in recorded.items() if k not in ("kind", "use")}

    def stage(self, name: str) -> dict[str, Any] | None:
        """The record of stage ``name``, if the run has one."""
        return next((r for r in self.stages if r.get("name") == name), None)

    def stages_of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The records of the stages of ``kind`` (``filter``, ``efficacy_judge``, ...)."""
        return [r for r in self.stages if r.get("kind") == kind]

    def columns(self, stage: str) -> list[str]:
        """The columns of ``stage``'s first committed shard (empty: no shard yet)."""
        shards = self._store.finished_shards(stage)
        return list(self._store.shard_schema(stage, shards[0]).names) if shards else []

    def tables(self, stage: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """``stage``'s committed shards, in order, each with those of ``columns`` it has."""
        for i in self._store.finished_shards(stage):
            if columns is None:
                yield self._store.read_shard(stage, i)
                continue
            have = set(self._store.shard_schema(stage, i).names)
            yield self._store.read_shard(stage, i, [c for c in columns if c in have])

    def rows(self, stage: str | None, columns: list[str] | None = None,
             limit: int = MAX_ROWS_READ) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of ``stage`` as dicts (empty for None or no shards)."""
        if not stage:
            return []
        rows: list[dict[str, Any]] = []
        for table in self.tables(stage, columns):
            rows.extend(table.slice(0, limit - len(rows)).to_pylist())
            if len(rows) >= limit:
                break
        return rows

    def artifact(self, stage: str, name: str) -> Path | None:
        """The file ``name`` a stage wrote: listed in its record's ``artifacts`` (by key or by
        file name), else in its ``artifacts`` folder; None when there is none."""
        rec = self.stage(stage) or {}
        candidates: list[Path] = []
        for key, value in (rec.get("artifacts") or {}).items():
            if key == name or Path(str(value)).name == name:
                candidates += [Path(str(value)), self.root / str(value)]
        candidates.append(self._store.stage_dir(stage) / "artifacts" / name)
        return next((p for p in candidates if p.is_file()), None)

    def image_url(self, digest: str) -> str | None:
        """Image ``digest`` of the run's image store as a ``data:`` URL, for a section's
        ``html`` (the page stays one file); None when the store lacks it."""
        if not digest or not self._store.images.has(digest):
            return None
        return image_data_url(self._store.images.get(digest), default="image/png")

    def image_path(self, digest: str) -> str:
        """Image ``digest``'s file relative to the run directory, for a section's
        ``markdown`` (``report.md`` sits in the run directory)."""
        return self._store.images.path(digest).relative_to(self.root).as_posix()
