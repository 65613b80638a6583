"""What a plugin adds to the training-tool exports (``curate export --format llamafactory|verl``,
:mod:`dualcurate.export_formats`), handed back from the hook ``dualcurate_export_extras()``:
:class:`ExportSubset`, a ``--subset`` cut over the plugin's own columns, and
:class:`ExportField`, a field of verl's ``extra_info`` taken from them. Core knows no plugin's
columns: the difficulty plugin adds the ``hard`` / ``nontrivial`` subsets and the
``pass_rate`` field this way, the rl-subset plugin ``rl`` / ``sft`` and the carve-out's
``split``::

    @hookimpl
    def dualcurate_export_extras(self) -> list[ExportSubset | ExportField]:
        return [ExportSubset("scored", "rows scored above 0.5", column="score",
                             hint="run the my-filter stage",
                             keep=lambda row: (row.get("score") or 0) > 0.5),
                ExportField("score", pa.float64(), lambda row: row.get("score"))]

This module imports only pyarrow: plugins import it without the host.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

__all__ = ["ExportField", "ExportSubset"]

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def _check_name(what: str, name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r}: a name is lowercase letters, digits, '_' and '-', "
                         f"starting with a letter")


@dataclass
class ExportSubset:
    """A ``--subset NAME`` of the training-tool exports: the kept rows (every row with
    ``--all-rows``) for which ``keep(row)`` is true. ``column``: the column the exported stage
    must have (else the export is refused, with ``hint`` saying how to get it: "run the
    difficulty filter"); ``help``: what the subset holds, for error messages and docs.
    ``all_rows``: read every row, kept or not (the rl-subset carve-out's ``rl`` rows are
    ``keep = false`` by design). ``plugin``: filled in by the host with the plugin that added
    it."""

    name: str
    help: str
    column: str
    hint: str
    keep: Callable[[dict[str, Any]], bool]
    all_rows: bool = False
    plugin: str = ""

    def __post_init__(self) -> None:
        _check_name("export subset", self.name)


@dataclass
class ExportField:
    """A field of verl's ``extra_info`` (after core's own): ``value(row)`` of Arrow ``type``
    (None: null). ``refines``: the field is one of core's (``split``, of core's type), and
    ``value(row)``, where not None, takes the place of core's value. ``plugin``: filled in by
    the host with the plugin that added it."""

    name: str
    type: pa.DataType
    value: Callable[[dict[str, Any]], Any]
    refines: bool = False
    plugin: str = ""

    def __post_init__(self) -> None:
        _check_name("export field", self.name)
        if not isinstance(self.type, pa.DataType):
            raise ValueError(f"export field {self.name!r}: type must be a pyarrow DataType "
                             f"(pa.float64(), pa.string(), ...), not {self.type!r}")
