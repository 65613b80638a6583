"""Stages type their own columns (``Stage.column_types``): a shard whose values of a column are
all None stores that column with its declared type, like every other shard, whichever path
writes it (a source, a map stage through the executor, a stage after it carrying the column
through, a whole-dataset stage)."""

from __future__ import annotations

import copy

import pyarrow as pa
import pytest

from dualcurate import (
    DatasetStage,
    Distiller,
    Filter,
    Pipeline,
    Register,
    StageResult,
    hookimpl,
    load_recipe,
    rows_to_table,
)
from dualcurate.schema import KNOWN_COLUMNS, schema_types, type_table

from .conftest import CountingSource


class Scorer(Distiller):
    """Adds ``score``: None for the first four rows (a whole shard at shard_size 4)."""

    name = "scorer"
    provides = ("score",)
    column_types = {"score": pa.float64()}

    def process(self, rows, ctx):
        return [{**r, "score": None if int(r["answer"]) < 8 else int(r["answer"]) / 10}
                for r in rows]


class Carry(Filter):
    """Keeps every row; declares nothing, so ``score`` is carried through as read."""

    name = "carry"

    def process(self, rows, ctx):
        return [{**r, "keep": True} for r in rows]


class Labeller(DatasetStage):
    """A whole-dataset stage adding ``label``, None everywhere."""

    name = "labeller"
    kind = "efficacy_judge"
    column_types = {"label": pa.string()}

    def run(self, dataset, ctx):
        import datasets

        table = dataset.data.table
        table = table.append_column("label", pa.nulls(table.num_rows))
        return StageResult(dataset=datasets.Dataset(table))


class TypedPlugin:
    @hookimpl
    def dualcurate_register_sources(self, register: Register) -> None:
        register(CountingSource)

    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        register(Scorer)

    @hookimpl
    def dualcurate_register_filters(self, register: Register) -> None:
        register(Carry)

    @hookimpl
    def dualcurate_register_efficacy_judges(self, register: Register) -> None:
        register(Labeller)


RECIPE = {"run": {"shard_size": 4}, "source": {"use": "counting", "n": 10},
          "distill": {"use": "scorer"}, "filter": {"use": "carry"},
          "judge": {"use": "labeller"}}


def test_all_none_shards_keep_the_declared_type(plugin_host, register_plugin, tmp_path):
    register_plugin(TypedPlugin(), name="typed")
    store = Pipeline(load_recipe(copy.deepcopy(RECIPE)), host=plugin_host).run(tmp_path / "r")
    for stage in ("distill", "filter"):  # written by the stage, then carried through
        types = {store.shard_schema(stage, i).field("score").type
                 for i in store.finished_shards(stage)}
        assert types == {pa.float64()}, stage
        assert store.read_shard(stage, 0).column("score").null_count == 4
    assert {store.shard_schema("judge", i).field("label").type
            for i in store.finished_shards("judge")} == {pa.string()}
    assert len(store.dataset("filter")) == 10  # the shards read back as one table


def test_rows_to_table_types_what_it_is_given():
    rows = [{"id": "a", "pass_rate": None}, {"id": "b", "pass_rate": None}]
    assert rows_to_table(rows).schema.field("pass_rate").type == pa.null()
    typed = rows_to_table(rows, {"pass_rate": pa.float64()})
    assert typed.schema.field("pass_rate").type == pa.float64()
    assert "pass_rate" not in KNOWN_COLUMNS  # the difficulty plugin types it, not core
    with pytest.raises(ValueError, match="column 'keep': declared as string"):
        rows_to_table(rows, {"keep": pa.string()})


def test_type_table_and_schema_types():
    table = pa.table({"id": ["a"], "x": pa.nulls(1), "y": pa.array([1])})
    typed = type_table(table, {"x": pa.float64(), "y": pa.string()})
    assert typed.schema.field("x").type == pa.float64()
    assert typed.schema.field("y").type == pa.int64()  # only all-None columns are retyped
    assert schema_types(table.schema) == {"y": pa.int64()}  # core's and null ones left out
