"""The recipe's ``[models]`` table: each model named once, ``"@NAME"`` in any stage option, and
model builders that make a missing model before the stages run (once; again when their
options change; never half-built)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualcurate import (
    DualcurateError,
    MapStage,
    Pipeline,
    RecipeError,
    Register,
    StageConfig,
    hookimpl,
    load_recipe,
)
from dualcurate.errors import StageFailed
from dualcurate.models import MARKER, ModelBuilder, built_by
from dualcurate.recipe import ModelSpec, substitute_models


class StubModelConfig(StageConfig):
    size: int = 1
    fail: bool = False
    workers: int = 1

    runtime_fields = frozenset({"workers"})


class StubModelBuilder(ModelBuilder):
    """Writes ``weights.txt`` ("size N"); counts its builds; ``fail`` raises half-way."""

    name = "stub-model"
    Config = StubModelConfig
    builds = 0

    def build(self, out: Path, ctx: Any) -> None:
        type(self).builds += 1
        (out / "weights.txt").write_text(f"size {self.config.size}")
        if self.config.fail:
            raise RuntimeError("out of memory half-way")


class ReaderConfig(StageConfig):
    model: str
    extra: dict[str, Any] = {}


class ModelReader(MapStage):
    """Adds what the model folder it names holds: proof the model was there before it ran."""

    name = "model-reader"
    kind = "distiller"
    Config = ReaderConfig
    provides = ("weights",)

    def process(self, rows: list[dict], ctx: Any) -> list[dict]:
        weights = (Path(self.config.model) / "weights.txt").read_text()
        return [{**r, "weights": weights} for r in rows]


class ModelsPlugin:
    @hookimpl
    def dualcurate_register_model_builders(self, register: Register) -> None:
        register(StubModelBuilder)

    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        register(ModelReader)


@pytest.fixture
def host(core_host, register_plugin):
    register_plugin(ModelsPlugin(), name="models-test")
    StubModelBuilder.builds = 0
    return core_host


def recipe(tmp_path: Path, **build: Any) -> dict[str, Any]:
    return {
        "run": {"shard_size": 4},
        "models": {"hub": "org/model",
                   "base": {"path": str(tmp_path / "base"),
                            "build": {"use": "stub-model", **build}}},
        "source": {"use": "counting", "n": 4},
        "distill": {"use": "model-reader", "model": "@base",
                    "extra": {"teacher": "@hub", "list": ["@base", "@@base", "plain"]}},
    }


def run(host: Any, raw: dict, out: Path, overrides: list[str] | None = None) -> Any:
    return Pipeline(load_recipe(copy.deepcopy(raw), overrides), host=host).run(out)


def problems(raw: dict, host: Any = None) -> list[str]:
    with pytest.raises(RecipeError) as info:
        recipe_ = load_recipe(raw)
        Pipeline(recipe_, host=host).validate()
    return info.value.problems


# parsing -----------------------------------------------------------------------------------
def test_string_and_table_forms(tmp_path):
    parsed = load_recipe(recipe(tmp_path, size=2))
    assert parsed.models == {
        "hub": ModelSpec("hub", "org/model"),
        "base": ModelSpec("base", str(tmp_path / "base"), {"use": "stub-model", "size": 2})}
    assert load_recipe({"models": {"m": {"path": "p"}}, "source": {"use": "counting"}}
                       ).models == {"m": ModelSpec("m", "p")}


def test_references_are_replaced_everywhere_and_double_at_is_a_literal(tmp_path):
    options = load_recipe(recipe(tmp_path)).stage("distill").options_for("model-reader")
    assert options == {"model": str(tmp_path / "base"),
                       "extra": {"teacher": "org/model",
                                 "list": [str(tmp_path / "base"), "@base", "plain"]}}


@pytest.mark.parametrize(("models", "expected"), [
    ({"base": {"path": "p", "bogus": 1}},
     "[models.base] bogus: unknown key(s); a model table takes path and build"),
    ({"base": {"build": {"use": "stub-model"}}}, "[models.base] path: missing"),
    ({"base": {"path": "p", "build": "stub-model"}},
     "[models.base] build: a table naming the model builder"),
    ({"base": {"path": "p", "build": {"size": 2}}},
     "[models.base] build: a table naming the model builder"),
    ({"base": 3}, "[models] base: give a hub id or folder (a string), or a table"),
    ({"base": ""}, "[models] base: give a hub id or folder"),
    ({"a b": "p"}, "[models] a b: use letters, digits, _ . - in model names"),
])
def test_malformed_entries_are_named(models, expected):
    raw = {"models": models, "source": {"use": "counting"}}
    found = problems(raw)
    assert any(p.startswith(expected) for p in found), found


def test_models_must_be_a_table():
    assert problems({"models": ["p"], "source": {"use": "counting"}}) == [
        "[models]: must be a table of NAME = \"hub id or folder\" entries"]


def test_an_unknown_reference_names_the_option_and_the_models_defined(tmp_path):
    raw = recipe(tmp_path)
    raw["distill"]["extra"] = {"judge": {"model": "@nope"}}
    found = problems(raw)
    assert len(found) == 1
    assert found[0].startswith("[distill] extra.judge.model: '@nope' names no model in "
                               "[models] (models: base, hub); add nope = ")
    assert "write @@ for a literal @" in found[0]
    # in a per-plugin table and in --set too
    raw = recipe(tmp_path)
    raw["distill"]["plugins"] = {"other": {"model": "@teacher"}}
    assert any("'@teacher' names no model" in p for p in problems(raw))
    with pytest.raises(RecipeError, match="'@gone' names no model"):
        load_recipe(recipe(tmp_path), ["distill.model=\"@gone\""])


def test_set_moves_every_reference(tmp_path):
    moved = load_recipe(recipe(tmp_path), ['models.base.path="elsewhere"'])
    options = moved.stage("distill").options_for("model-reader")
    assert options["model"] == "elsewhere" and options["extra"]["list"][0] == "elsewhere"
    assert moved.models["base"].path == "elsewhere"
    assert moved.models["base"].build == {"use": "stub-model"}


leaves = st.one_of(st.integers(), st.booleans(), st.none(),
                   st.text(max_size=6).map(lambda s: ("text", s)), st.just(("ref",)))
trees = st.recursive(leaves, lambda children: st.one_of(
    st.lists(children, max_size=3),
    st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True), children, max_size=3)),
    max_leaves=12)


def _written(tree: Any) -> Any:
    """The tree as a recipe writes it: ("ref",) is "@base"; a text starting with @ gets @@."""
    if isinstance(tree, tuple):
        if tree == ("ref",):
            return "@base"
        return "@" + tree[1] if tree[1].startswith("@") else tree[1]
    if isinstance(tree, list):
        return [_written(t) for t in tree]
    if isinstance(tree, dict):
        return {k: _written(v) for k, v in tree.items()}
    return tree


def _meant(tree: Any, path: str) -> Any:
    """What the stage should get: references resolved, texts as they were meant."""
    if isinstance(tree, tuple):
        return path if tree == ("ref",) else tree[1]
    if isinstance(tree, list):
        return [_meant(t, path) for t in tree]
    if isinstance(tree, dict):
        return {k: _meant(v, path) for k, v in tree.items()}
    return tree


@given(tree=trees)
def test_substitution_resolves_references_and_unescapes_any_nesting(tree):
    models = {"base": ModelSpec("base", "runs/.cache/base")}
    found: list[str] = []
    out = substitute_models({"opt": _written(tree)}, models, "[distill]", found)
    assert found == []
    assert out == {"opt": _meant(tree, "runs/.cache/base")}


# validation ------------------------------------------------------------------------------
def test_an_unknown_builder_fails_validation_naming_the_registered(host, tmp_path):
    raw = recipe(tmp_path)
    raw["models"]["base"]["build"]["use"] = "nope"
    found = problems(raw, host)
    assert len(found) == 1
    assert found[0].startswith("[models.base] build.use: ") and "stub-model" in found[0]


def test_bad_builder_options_fail_validation(host, tmp_path):
    found = problems(recipe(tmp_path, size="big", bogus=1), host)
    assert sorted(p.split(":")[0] for p in found) == [
        "[models.base] build.bogus", "[models.base] build.size"]
    assert "unknown option for plugin 'stub-model'" in next(p for p in found if "bogus" in p)


# building --------------------------------------------------------------------------------
def test_built_once_before_the_stages_and_reused_on_rerun(host, tmp_path):
    raw = recipe(tmp_path)
    store = run(host, raw, tmp_path / "run")
    assert StubModelBuilder.builds == 1
    assert store.dataset("distill")["weights"] == ["size 1"] * 4
    marker = built_by(tmp_path / "base")
    assert marker["builder"] == "stub-model" and marker["model"] == "base"
    run(host, raw, tmp_path / "run")
    run(host, raw, tmp_path / "other-run")  # another run sharing the model
    run(host, recipe(tmp_path, workers=8), tmp_path / "run")  # runtime-only option
    assert StubModelBuilder.builds == 1


def test_a_changed_builder_option_rebuilds_and_the_stages_using_it_recompute(host, tmp_path):
    run(host, recipe(tmp_path), tmp_path / "run")
    logs: list[str] = []
    store = Pipeline(load_recipe(recipe(tmp_path, size=3)), host=host).run(
        tmp_path / "run", log=logs.append)
    assert StubModelBuilder.builds == 2
    assert built_by(tmp_path / "base")["options"]["size"] == 3
    assert any("built with other options; building it again with stub-model" in m
               for m in logs)
    assert store.dataset("distill")["weights"] == ["size 3"] * 4


def test_a_failed_build_leaves_nothing_and_the_next_run_builds(host, tmp_path):
    with pytest.raises(StageFailed, match=r"model base \(stub-model\) failed to build: "
                                          r"RuntimeError: out of memory half-way"):
        run(host, recipe(tmp_path, fail=True), tmp_path / "run")
    assert not (tmp_path / "base").exists()
    assert not (tmp_path / "base.building").exists()
    assert not (tmp_path / "run" / "source").exists(), "no stage may run without its model"
    run(host, recipe(tmp_path), tmp_path / "run")
    assert StubModelBuilder.builds == 2
    assert built_by(tmp_path / "base") is not None


def test_a_failed_rebuild_keeps_the_model_that_was_there(host, tmp_path):
    run(host, recipe(tmp_path), tmp_path / "run")
    before = built_by(tmp_path / "base")
    with pytest.raises(StageFailed):
        run(host, recipe(tmp_path, size=2, fail=True), tmp_path / "run")
    assert built_by(tmp_path / "base") == before
    assert (tmp_path / "base" / "weights.txt").read_text() == "size 1"


def test_what_a_killed_build_left_is_cleared(host, tmp_path):
    (tmp_path / "base.building").mkdir()
    (tmp_path / "base.building" / "weights.txt").write_text("half")
    run(host, recipe(tmp_path), tmp_path / "run")
    assert not (tmp_path / "base.building").exists()
    assert (tmp_path / "base" / "weights.txt").read_text() == "size 1"


def test_a_folder_no_builder_made_is_never_replaced(host, tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "weights.txt").write_text("someone's model")
    with pytest.raises(DualcurateError, match=rf"model base: .* holds files but no {MARKER}, "
                                              r"so no model builder made it; it is not "
                                              r"replaced\. Drop build from \[models.base\]"):
        run(host, recipe(tmp_path), tmp_path / "run")
    assert (tmp_path / "base" / "weights.txt").read_text() == "someone's model"
    assert StubModelBuilder.builds == 0
    (tmp_path / "base" / "weights.txt").unlink()  # an empty folder is built into
    run(host, recipe(tmp_path), tmp_path / "run")
    assert StubModelBuilder.builds == 1


def test_the_manifest_records_the_models(host, tmp_path):
    store = run(host, recipe(tmp_path, size=2), tmp_path / "run")
    manifest = json.loads((store.root / "manifest.json").read_text())
    signature = built_by(tmp_path / "base")["signature"]
    assert manifest["models"] == {
        "hub": {"path": "org/model"},
        "base": {"path": str(tmp_path / "base"), "builder": "stub-model",
                 "signature": signature}}
    assert manifest["recipe"]["distill"]["model"] == str(tmp_path / "base")
    # building leaves nothing in the run directory but the manifest's record
    assert sorted(p.name for p in store.root.iterdir() if p.is_dir()) == [
        "distill", "source"]
