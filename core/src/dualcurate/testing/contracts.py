"""Contract test suites, one per stage kind. A plugin's tests subclass one, name the class
``Test...`` and set the class attributes; pytest then runs every contract test against the
plugin through the real host.

```python
from dualcurate.testing.contracts import FilterContract
from dualcurate_hello import plugin
from dualcurate_hello.stages import AnswerLengthFilter

class TestAnswerLengthFilter(FilterContract):
    stage_cls = AnswerLengthFilter
    plugin = plugin
    input_rows = [...]   # or override the `rows` fixture
```
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ValidationError

from dualcurate.chat import ChatRequest
from dualcurate.engine import Engine
from dualcurate.formats import THINK_OPEN, render_trace, split_trace
from dualcurate.kinds import BY_NAME
from dualcurate.sampling import SamplingParams
from dualcurate.schema import CANONICAL_SCHEMA, Sample
from dualcurate.stages import (
    DatasetStage,
    MapStage,
    Source,
    Stage,
    StageResult,
)


def default_rows(n: int = 4) -> list[dict[str, Any]]:
    """A few canonical rows for map-stage contracts."""
    return [Sample(source="contract", domain="math" if i % 2 else "perception",
                   question=f"What is {i} + {i}?", answer=str(2 * i),
                   answer_type="number").to_row() for i in range(n)]


def trace(text: str, answer: str, **fields: Any) -> dict[str, Any]:
    """A teacher trace dict (every key of :class:`dualcurate.schema.Trace`)."""
    reasoning, _ = split_trace(text)
    base = {"text": text, "reasoning": reasoning, "answer": answer, "finish_reason": "stop",
            "truncated": False, "prompt_tokens": 10, "completion_tokens": len(text.split()),
            "model": "contract-teacher", "engine": "contract", "sample_index": 0,
            "error": None, "verdict": None, "method": None, "label": None, "reason": None}
    return {**base, **fields}


def rows_with_traces(n: int = 4) -> list[dict[str, Any]]:
    """:func:`default_rows` with teacher traces, as a verifier (or any stage that reads
    traces) gets them: per row a correct trace, a wrong one, and one cut at max_tokens."""
    rows = default_rows(n)
    for row in rows:
        gold, wrong = row["answer"], str(int(row["answer"]) + 1)
        row["traces"] = [
            trace(render_trace(f"add the numbers: {gold}", gold), gold),
            trace(render_trace(f"a slip gives {wrong}", wrong), wrong, sample_index=1),
            trace(THINK_OPEN + "adding the numbers step by step, first", "", sample_index=2,
                  finish_reason="length", truncated=True),
        ]
        row["n_traces"] = 3
    return rows


class StageContract:
    """Checks every stage class must pass. Set ``stage_cls`` (the class), ``plugin`` (the
    object holding its hook functions: the module the entry point names) and, optionally,
    ``config`` (the options the checks build it with)."""

    stage_cls: ClassVar[type[Stage]]
    plugin: ClassVar[object]
    config: ClassVar[dict[str, Any]] = {}

    def make_stage(self) -> Stage:
        return self.stage_cls(dict(self.config))

    def test_has_name_and_kind(self) -> None:
        assert self.stage_cls.name, "set a class attribute `name` (the registered name)"
        assert self.stage_cls.kind in BY_NAME

    def test_config_is_pydantic_and_forbids_unknown_keys(self) -> None:
        assert issubclass(self.stage_cls.Config, BaseModel)
        with pytest.raises(ValidationError):
            self.stage_cls({**self.config, "surely_not_an_option": 1})

    def test_registered_through_its_hook(self, plugin_host, register_plugin) -> None:
        register_plugin(self.plugin, name=f"contract-{self.stage_cls.name}")
        assert plugin_host.get(self.stage_cls.kind, self.stage_cls.name) is self.stage_cls

    def test_signature_is_stable(self) -> None:
        assert self.make_stage().signature() == self.make_stage().signature()

    def test_column_types_are_of_its_columns(self) -> None:
        import pyarrow as pa

        from dualcurate.schema import column_types

        for col, dtype in self.stage_cls.column_types.items():
            assert col in self.stage_cls.provides, f"column_types names {col!r}, not provided"
            assert isinstance(dtype, pa.DataType), f"column_types[{col!r}]: not an Arrow type"
        column_types(self.stage_cls.column_types)  # raises if it retypes a core column


class SourceContract(StageContract):
    """A source yields canonical rows with unique ids, deterministically."""

    def _read(self, ctx) -> list[dict[str, Any]]:
        stage = self.make_stage()
        assert isinstance(stage, Source)
        stage.setup(ctx)
        try:
            return [row for batch in stage.read(ctx) for row in batch]
        finally:
            stage.teardown()

    def test_reads_canonical_rows(self, stage_context) -> None:
        rows = self._read(stage_context)
        assert rows, "the source produced no rows with its contract config"
        for row in rows:
            for field in CANONICAL_SCHEMA.names:
                assert field in row, f"row lacks canonical column {field!r}"
            for digest in row["images"]:
                assert stage_context.images.has(digest), f"image {digest} not in the store"
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), "ids must be unique"

    def test_deterministic(self, stage_context) -> None:
        assert [r["id"] for r in self._read(stage_context)] == \
               [r["id"] for r in self._read(stage_context)]


class MapStageContract(StageContract):
    """A map stage returns one row per input row, in order, with its declared columns."""

    input_rows: ClassVar[list[dict[str, Any]] | None] = None

    @pytest.fixture
    def rows(self) -> list[dict[str, Any]]:
        """The input rows of the map-stage contract checks (a fresh copy per test): the
        class's ``input_rows``, else canonical rows with teacher traces for stages that read
        them (verifiers, and any stage that ``requires`` traces), else four canonical rows
        (``default_rows()``). Override the fixture, or set ``input_rows``, to feed your own."""
        if self.input_rows:
            return [dict(r) for r in self.input_rows]
        reads_traces = self.stage_cls.kind == "verifier" or "traces" in self.stage_cls.requires
        return rows_with_traces() if reads_traces else default_rows()

    def _process(self, rows, ctx) -> list[dict[str, Any]]:
        stage = self.make_stage()
        assert isinstance(stage, MapStage)
        stage.setup(ctx)
        try:
            return stage.process(rows, ctx)
        finally:
            stage.teardown()

    def test_one_row_per_input_in_order(self, rows, stage_context) -> None:
        out = self._process(rows, stage_context)
        assert [r["id"] for r in out] == [r["id"] for r in rows]

    def test_adds_declared_columns(self, rows, stage_context) -> None:
        out = self._process(rows, stage_context)
        for col in self.stage_cls.provides:
            assert all(col in r for r in out), f"declared column {col!r} missing"

    def test_rows_convert_to_arrow(self, rows, stage_context) -> None:
        from dualcurate.schema import rows_to_table

        table = rows_to_table(self._process(rows, stage_context), self.stage_cls.column_types)
        assert table.num_rows == len(rows)


class DistillerContract(MapStageContract):
    def test_adds_traces(self, rows, stage_context) -> None:
        out = self._process(rows, stage_context)
        assert all(isinstance(r.get("traces"), list) for r in out)


class VerifierContract(MapStageContract):
    def test_every_trace_gets_a_verdict(self, rows, stage_context) -> None:
        out = self._process(rows, stage_context)
        assert any(row.get("traces") for row in rows), "give the verifier rows with traces"
        for before, row in zip(rows, out, strict=True):
            assert len(row.get("traces") or []) == len(before.get("traces") or [])
            for trace in row.get("traces") or []:
                assert trace["verdict"] in ("correct", "incorrect", "invalid", "undecided")

    def test_a_truncated_trace_is_never_correct(self, rows, stage_context) -> None:
        out = self._process(rows, stage_context)
        for row in out:
            for trace in row.get("traces") or []:
                if trace.get("truncated"):
                    assert trace["verdict"] != "correct"


class FilterContract(MapStageContract):
    def test_sets_boolean_keep(self, rows, stage_context) -> None:
        out = self._process(rows, stage_context)
        assert all(isinstance(r["keep"], bool) for r in out)


class DatasetStageContract(StageContract):
    input_rows: ClassVar[list[dict[str, Any]] | None] = None

    def _run(self, ctx) -> StageResult:
        import datasets

        from dualcurate.schema import rows_to_table

        stage = self.make_stage()
        assert isinstance(stage, DatasetStage)
        rows = self.input_rows or default_rows()
        stage.setup(ctx)
        try:
            return stage.run(datasets.Dataset(rows_to_table(rows)), ctx)
        finally:
            stage.teardown()


class TrainerContract(DatasetStageContract):
    def test_writes_a_model_dir(self, stage_context) -> None:
        from pathlib import Path

        result = self._run(stage_context)
        model = Path(result.artifacts["model"])
        assert model.is_dir()
        assert list(model.glob("*.safetensors")), "weights must be saved as safetensors"


class EfficacyJudgeContract(DatasetStageContract):
    def test_reports_groups(self, stage_context) -> None:
        result = self._run(stage_context)
        assert "groups" in result.report


class EngineContract:
    """An engine answers every request with n completions and reports each once.

    Set ``engine_cls`` (the engine class; not ``stage_cls``: an engine is no stage),
    ``plugin`` and ``config`` (its options; an :class:`~dualcurate.EngineConfig` requires
    ``model``), or override ``make_engine()``."""

    engine_cls: ClassVar[type[Engine]]
    plugin: ClassVar[object]
    config: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("Test") and not hasattr(cls, "engine_cls"):
            hint = (" (it sets stage_cls: an engine contract names its class engine_cls)"
                    if hasattr(cls, "stage_cls") else "")
            raise TypeError(f"{cls.__name__}: set engine_cls = <your Engine subclass>{hint}")

    def make_engine(self) -> Engine:
        """``engine_cls(config)``; override for an engine that needs more (a server)."""
        return self.engine_cls(dict(self.config))

    def test_registered_through_its_hook(self, plugin_host, register_plugin) -> None:
        register_plugin(self.plugin, name=f"contract-{self.engine_cls.name}")
        assert plugin_host.get("engine", self.engine_cls.name) is self.engine_cls

    def test_n_completions_per_request(self, stage_context) -> None:
        engine = self.make_engine()
        engine.setup(stage_context)
        try:
            requests = [ChatRequest(messages=[{"role": "user", "content": f"Say {i}"}], n=2)
                        for i in range(3)]
            seen: list[int] = []
            out = engine.generate(requests, SamplingParams(max_tokens=8, seed=1),
                                  on_result=lambda i, c: seen.append(i))
        finally:
            engine.close()
        assert [len(c) for c in out] == [2, 2, 2]
        assert sorted(seen) == [0, 1, 2]
        for comps in out:
            for comp in comps:
                assert comp.ok, comp.error
                assert comp.finish_reason in ("stop", "length")
                assert comp.completion_tokens > 0

    def test_identity_names_the_model(self) -> None:
        assert self.make_engine().identity().get("model")
