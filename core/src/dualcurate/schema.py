"""The canonical sample schema (pydantic models + Arrow schema) and the column types stages add.

Field by field (docs/schema.md says the same):

* ``id``: stable content hash of (source, question, answer, image hashes): :func:`sample_id`.
* ``source``: name of the dataset the sample came from. ``domain``: task group (math, chart,
  spatial, ...); the efficacy judge groups by it by default.
* ``images``: list of sha256 hex digests of image bytes in the run's image store.
* ``question`` / ``answer``: cleaned question and gold answer. ``original_question`` /
  ``original_answer``: as read, before cleaning.
* ``answer_type``: one of :data:`ANSWER_TYPES`. ``choices``: option texts for multiple choice.
* ``caption``: dense caption (may be empty). ``meta``: free-form JSON object (stored as text).

Later stages add columns. Core types the ones every stage kind shares (:data:`KNOWN_COLUMNS`:
``traces`` as a list of :class:`Trace`, ``n_traces``, ``n_verified``, ``consistent``, ``keep``,
``split``); a plugin types its own in its stage's ``column_types``, passed to
:func:`rows_to_table` as ``types``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

ANSWER_TYPES = ("multiple_choice", "number", "expression", "text", "yes_no", "open")
AnswerType = Literal["multiple_choice", "number", "expression", "text", "yes_no", "open"]
VERDICTS = ("correct", "incorrect", "invalid", "undecided")


def sample_id(source: str, question: str, answer: str, images: list[str] | tuple[str, ...] = ()) -> str:
    """Stable id: sha256 over the source name, question, answer and image hashes (hex, 24)."""
    h = hashlib.sha256()
    for part in (source, question, answer, *images):
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()[:24]


class Sample(BaseModel):
    """One canonical sample, as every source must produce it."""

    model_config = ConfigDict(extra="allow")

    id: str = ""
    source: str
    domain: str = "general"
    images: list[str] = Field(default_factory=list)
    question: str
    answer: str
    answer_type: AnswerType = "open"
    choices: list[str] = Field(default_factory=list)
    caption: str = ""
    original_question: str = ""
    original_answer: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        if not self.id:
            self.id = sample_id(self.source, self.question, self.answer, self.images)
        if not self.original_question:
            self.original_question = self.question
        if not self.original_answer:
            self.original_answer = self.answer

    def to_row(self) -> dict[str, Any]:
        row = self.model_dump()
        row["meta"] = json.dumps(row["meta"], sort_keys=True, ensure_ascii=False)
        return row


class Trace(BaseModel):
    """One teacher (or rollout) response, parsed, with its verdict once verified."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    reasoning: str = ""
    answer: str = ""
    finish_reason: str | None = None
    truncated: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    engine: str = ""
    sample_index: int = 0
    error: str | None = None
    verdict: str | None = None
    method: str | None = None
    label: str | None = None
    reason: str | None = None


TRACE_TYPE = pa.struct([
    ("text", pa.string()),
    ("reasoning", pa.string()),
    ("answer", pa.string()),
    ("finish_reason", pa.string()),
    ("truncated", pa.bool_()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("model", pa.string()),
    ("engine", pa.string()),
    ("sample_index", pa.int64()),
    ("error", pa.string()),
    ("verdict", pa.string()),
    ("method", pa.string()),
    ("label", pa.string()),
    ("reason", pa.string()),
])

CANONICAL_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("source", pa.string()),
    ("domain", pa.string()),
    ("images", pa.list_(pa.string())),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("answer_type", pa.string()),
    ("choices", pa.list_(pa.string())),
    ("caption", pa.string()),
    ("original_question", pa.string()),
    ("original_answer", pa.string()),
    ("meta", pa.string()),
])

#: A list of traces (teacher responses, rollouts): rows may hold :class:`Trace` objects or
#: dicts missing fields; :func:`rows_to_table` fills them in.
TRACES_TYPE = pa.list_(TRACE_TYPE)

#: Types of the canonical columns and of the columns every stage kind shares (distillers'
#: ``traces``, verifiers' counts, filters' ``keep``, the ``split``); anything else is typed by
#: the stage that adds it (``Stage.column_types``) or inferred by Arrow.
KNOWN_COLUMNS: dict[str, pa.DataType] = {
    **{f.name: f.type for f in CANONICAL_SCHEMA},
    "traces": TRACES_TYPE,
    "n_traces": pa.int64(),
    "n_verified": pa.int64(),
    "consistent": pa.bool_(),
    "keep": pa.bool_(),
    "split": pa.string(),
}


def _normalise(dtype: pa.DataType | None, column: str, value: Any) -> Any:
    if column == "meta" and not isinstance(value, str | None):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if dtype == TRACES_TYPE and value is not None:
        return [t.model_dump() if isinstance(t, Trace) else {**_EMPTY_TRACE, **t} for t in value]
    return value


_EMPTY_TRACE = {name: None for name in Trace.model_fields}


def column_types(types: Mapping[str, pa.DataType] | None = None) -> dict[str, pa.DataType]:
    """:data:`KNOWN_COLUMNS` with a stage's own ``types`` added. A stage may not retype a
    column core types (one column, one type in every shard of every stage)."""
    merged = dict(KNOWN_COLUMNS)
    for name, dtype in (types or {}).items():
        known = KNOWN_COLUMNS.get(name)
        if known is not None and known != dtype:
            raise ValueError(f"column {name!r}: declared as {dtype}, but core stores it as "
                             f"{known}; drop it from the stage's column_types")
        merged[name] = dtype
    return merged


def schema_types(schema: pa.Schema) -> dict[str, pa.DataType]:
    """The types of a schema's columns beyond core's, less those Arrow could only call null (a
    column all None): the ``types`` to write rows read from a shard back with, so the columns
    a stage carries through keep their type."""
    return {f.name: f.type for f in schema
            if f.name not in KNOWN_COLUMNS and not pa.types.is_null(f.type)}


def rows_to_table(rows: list[dict[str, Any]],
                  types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """Rows (dicts) to an Arrow table: core's known columns and the ``types`` given (a stage's
    ``column_types``, the upstream shard's schema) get those types, the rest are inferred.
    Typing matters most where a shard's values are all None (a score nobody could
    compute yet): inferred, that column would be null-typed and unlike the other shards.
    Column order: canonical first, then in order of first appearance."""
    declared = column_types(types)
    columns: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    canonical = [f.name for f in CANONICAL_SCHEMA if f.name in seen]
    ordered = canonical + [c for c in columns if c not in canonical]
    arrays = []
    fields = []
    for col in ordered:
        dtype = declared.get(col)
        values = [_normalise(dtype, col, row.get(col)) for row in rows]
        try:
            arr = pa.array(values, type=dtype) if dtype is not None else pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"column {col!r}: values do not fit one Arrow type ({exc}); "
                             f"make the stage emit one type per column") from exc
        arrays.append(arr)
        fields.append(pa.field(col, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def type_table(table: pa.Table, types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """``table`` with its all-None (null-typed) columns given their declared type, core's or
    ``types``; other columns as they are."""
    declared = column_types(types)
    for i, field in enumerate(table.schema):
        dtype = declared.get(field.name)
        if dtype is not None and pa.types.is_null(field.type):
            table = table.set_column(i, pa.field(field.name, dtype),
                                     pa.nulls(table.num_rows, dtype))
    return table


def table_to_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Arrow table to rows; ``meta`` stays a JSON string (use :func:`row_meta`)."""
    return table.to_pylist()


def row_meta(row: dict[str, Any]) -> dict[str, Any]:
    """The ``meta`` column of a row as a dict."""
    meta = row.get("meta")
    if not meta:
        return {}
    return json.loads(meta) if isinstance(meta, str) else dict(meta)
