"""The built-in ``teacher`` distiller: its engine is a typed reference that ``curate validate``
resolves and checks before anything runs; the per-engine distillers are the teacher with a
default engine; the engine's runtime options stay out of the stage's signature."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualcurate import (
    Completion,
    Engine,
    EngineConfig,
    Pipeline,
    RecipeError,
    Register,
    hookimpl,
    load_recipe,
)
from dualcurate.distill import TeacherDistiller
from dualcurate.formats import render_trace
from dualcurate.recipe import EngineRef, check_refs


class EchoConfig(EngineConfig):
    batch_size: int = 4
    style: str = "plain"
    runtime_fields = frozenset({"batch_size"})


class EchoEngine(Engine):
    """Answers every request with a trace whose answer is the prompt's last word."""

    name = "echo"
    Config = EchoConfig
    calls = 0
    lock = threading.Lock()

    def generate(self, requests, sampling, on_result=None):
        out = []
        for i, request in enumerate(requests):
            text = request.messages[-1]["content"][-1]["text"]
            with EchoEngine.lock:
                EchoEngine.calls += len(request.indices())
            comps = [Completion(text=render_trace(f"{self.config.style} {idx}",
                                                  text.split()[-1]),
                                finish_reason="stop", completion_tokens=2)
                     for idx in request.indices()]
            out.append(comps)
            if on_result:
                on_result(i, comps)
        return out


class EchoDistiller(TeacherDistiller):
    """What a per-engine distiller plugin is now: the teacher with a default engine."""

    name = "echo-distill"
    default_engine = "echo"


class EchoPlugin:
    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        register(EchoEngine)

    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        register(EchoDistiller)


@pytest.fixture
def host(core_host, register_plugin):
    register_plugin(EchoPlugin(), name="echo")
    return core_host


def recipe(**distill):
    return load_recipe({"run": {"shard_size": 4}, "source": {"use": "counting", "n": 6},
                        "distill": {"use": "teacher", **distill}})


def validate_problems(host, **distill) -> list[str]:
    with pytest.raises(RecipeError) as err:
        Pipeline(recipe(**distill), host=host).validate()
    return err.value.problems


def test_teacher_runs_the_engine_its_recipe_names(host, tmp_path):
    store = Pipeline(recipe(engine={"use": "echo", "model": "m", "style": "x"}),
                     host=host).run(tmp_path / "run")
    rows = store.dataset("distill").to_list()
    assert len(rows) == 6
    assert all(r["traces"][0]["reasoning"] == "x 0" and r["traces"][0]["engine"] == "echo"
               for r in rows)


def test_validate_names_the_engine_option_and_the_fix(host):
    problems = validate_problems(host, engine={"use": "echo", "modle": "m"})
    assert any(p.startswith("[distill] engine.modle: unknown option (engine 'echo'")
               for p in problems), problems
    problems = validate_problems(host, engine={"use": "ecko", "model": "m"})
    assert any(p.startswith("[distill] engine.use: engine 'ecko': nothing registered") and
               "'echo'" in p for p in problems), problems
    problems = validate_problems(host)
    assert any(p.startswith("[distill] engine: required option missing") for p in problems)


def test_a_string_names_the_engine_with_its_defaults_and_a_default_engine_fills_use(host):
    by_name = TeacherDistiller({"engine": "echo"})
    assert by_name.config.engine.use == "echo" and by_name.config.engine.options == {}
    default = Pipeline(load_recipe({"source": {"use": "counting"},
                                    "distill": {"use": "echo-distill",
                                                "engine": {"model": "m"},
                                                "caption_engine": {"model": "c"}}}),
                       host=host).validate()[1].stage
    assert default.config.engine.use == "echo" and default.config.engine.options == {"model": "m"}
    assert default.config.caption_engine.use == "echo"
    assert default.config.caption_engine.options == {"model": "c"}


def test_plugin_selects_the_teacher_with_its_engine(host, tmp_path):
    """`curate --plugin echo-distill` on a recipe written for the teacher: the plugin's own
    table decides the engine, as `--plugin vllm-distill` does."""
    raw = {"run": {"shard_size": 4}, "source": {"use": "counting", "n": 2},
           "distill": {"use": "teacher", "engine": {"use": "echo", "model": "a"},
                       "plugins": {"echo-distill": {"engine": {"model": "b", "style": "p"}}}}}
    swapped = Pipeline(load_recipe(raw), host=host, selected=["echo"]).validate()[1]
    assert swapped.plugin == "echo-distill"
    assert swapped.stage.config.engine.use == "echo"  # its default engine fills `use`
    assert swapped.stage.config.engine.options == {"model": "b", "style": "p"}
    plain = Pipeline(load_recipe(raw), host=host).validate()[1]
    assert plain.plugin == "teacher" and plain.stage.config.engine.options == {"model": "a"}


def test_engine_runtime_options_leave_the_signature_alone(host, tmp_path):
    def signature(**engine):
        stage = Pipeline(recipe(engine={"use": "echo", "model": "m", **engine}),
                         host=host).validate()[1].stage
        return stage.signature()

    assert signature() == signature(batch_size=64) != signature(style="other")


def test_a_rerun_with_another_batch_size_reuses_every_shard(host, tmp_path):
    Pipeline(recipe(engine={"use": "echo", "model": "m"}), host=host).run(tmp_path / "run")
    calls = EchoEngine.calls
    store = Pipeline(recipe(engine={"use": "echo", "model": "m", "batch_size": 1}),
                     host=host).run(tmp_path / "run")
    assert EchoEngine.calls == calls
    assert store.stage_record("distill")["status"] == "done"


def test_models_table_names_the_teacher_once(host, tmp_path):
    raw = {"models": {"teacher": "org/teacher"}, "source": {"use": "counting"},
           "distill": {"use": "teacher", "engine": {"use": "echo", "model": "@teacher"}}}
    stage = Pipeline(load_recipe(raw), host=host).validate()[1].stage
    assert stage.config.engine.options["model"] == "org/teacher"
    overridden = load_recipe(raw, ["models.teacher=\"org/other\""])
    stage = Pipeline(overridden, host=host).validate()[1].stage
    assert stage.config.engine.options["model"] == "org/other"


def test_check_refs_reports_every_reference(host):
    stage = TeacherDistiller({"engine": {"use": "echo", "bogus": 1},
                              "caption_engine": {"use": "nope"}})
    problems = check_refs(stage.config, host)
    assert any(p.startswith("engine.bogus: unknown option") for p in problems)
    assert any(p.startswith("caption_engine.use: engine 'nope'") for p in problems)


options = st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True).filter(
    lambda k: k != "use"), st.integers() | st.text(max_size=5), max_size=4)


@given(use=st.from_regex(r"[a-z][a-z-]{0,8}", fullmatch=True), own=options)
def test_a_reference_holds_its_options_beside_use(use, own):
    ref = EngineRef(**{"use": use, **own})
    assert ref.use == use and ref.options == own
    assert EngineRef.model_validate(use).use == use
