"""The judge's engine and trainer are typed references: their options, resolution and
validation before anything runs (a misspelt trainer option fails ``curate validate``, not
after the base model was evaluated), the base model under the trainer's ``model_field``, and
the components' runtime options out of the signature."""

from __future__ import annotations

import datasets
import pytest
from pydantic import ValidationError

from dualcurate import Pipeline, Register, hookimpl, load_recipe, rows_to_table
from dualcurate.errors import RecipeError
from dualcurate.recipe import check_refs
from dualcurate_dualtuning import plugin
from dualcurate_dualtuning.judge import DualTuningJudge

SCRIPT = {t: {"math": {"S": 2, "L": 2}} for t in ("base", "trained")}


def config(**overrides):
    return DualTuningJudge({"base_model": "base-model", "eval_fraction": 0.5,
                            **overrides}).config


def test_the_references_hold_their_options_and_the_judge_the_model():
    newer = config(engine={"use": "scripted", "script": SCRIPT},
                   trainer={"use": "recording", "epochs": 2})
    # the judge owns the model: the engine loads the base model first
    assert (newer.engine.use, newer.engine.options) == ("scripted",
                                                        {"script": SCRIPT, "model": "base-model"})
    assert (newer.trainer.use, newer.trainer.options) == ("recording", {"epochs": 2})
    default = config()
    assert (default.engine.use, default.engine.options) == ("hf", {"model": "base-model"})
    assert (default.trainer.use, default.trainer.options) == ("sft", {})


@pytest.mark.parametrize("option", ["engine", "trainer"])
def test_a_model_other_than_the_base_is_refused(option):
    with pytest.raises(ValidationError, match=rf"{option}.model = 'other'.*set base_model"):
        config(**{option: {"use": "x", "model": "other"}})
    assert config(**{option: {"use": "x", "model": "base-model"}})  # the same one is fine


def test_unknown_components_are_named(plugin_host):
    problems = check_refs(config(engine="nope", trainer="nada"), plugin_host)
    assert any(p.startswith("engine.use: engine 'nope'") for p in problems), problems
    assert any(p.startswith("trainer.use: trainer 'nada'") for p in problems), problems


def test_entry_points_are_loaded_on_first_need(plugin_host):
    assert not {"hf", "sft"} & set(plugin_host.infos)
    assert check_refs(config(engine="hf", trainer="sft"), plugin_host) == []
    assert {"hf", "sft"} <= set(plugin_host.infos)


def test_the_resolved_trainer_reference_is_what_the_trainer_gets(scripted, plugin_host):
    cfg = config(trainer={"use": "recording", "epochs": 2})
    assert check_refs(cfg, plugin_host) == []
    # the base model under the trainer's model_field; no lora defaults it does not take
    assert cfg.trainer.options == {"epochs": 2, "model": "base-model"}
    sft = config(trainer={"use": "sft", "lora": False})
    assert check_refs(sft, plugin_host) == []
    assert sft.trainer.options == {"model": "base-model", "lora": False, "merge_lora": True}


def path_trainer_plugin(recording: type) -> object:
    """A trainer taking the model it starts from as ``model_name_or_path``."""

    class PathTrainerConfig(recording.Config):
        model_name_or_path: str = ""

    class PathTrainer(recording):
        name = "by-path"
        Config = PathTrainerConfig
        model_field = "model_name_or_path"

        def train(self, dataset, ctx):
            out = super().train(dataset, ctx)
            type(self).calls[-1]["base"] = self.config.model_name_or_path
            return out

    class PathTrainerPlugin:
        @hookimpl
        def dualcurate_register_trainers(self, register: Register) -> None:
            register(PathTrainer)

    return PathTrainerPlugin()


def test_model_field_says_where_the_base_model_goes(scripted, plugin_host, register_plugin,
                                                    stage_context, make_rows):
    _, recording = scripted
    register_plugin(path_trainer_plugin(recording), name="by-path")
    stage = DualTuningJudge({"base_model": "base-model", "trainer": "by-path",
                             "engine": {"use": "scripted", "script": SCRIPT}})
    assert check_refs(stage.config, plugin_host) == []
    assert stage.config.trainer.options == {"model_name_or_path": "base-model"}
    stage.run(datasets.Dataset(rows_to_table(make_rows({"math": 8}))), stage_context)
    assert [c["base"] for c in recording.calls] == ["base-model"]


def recipe(**judge):
    return load_recipe({
        "source": {"use": "sum-rows", "groups": {"math": 8}},
        "judge": {"use": "dual-tuning", "base_model": "base-model",
                  "engine": {"use": "scripted", "script": SCRIPT}, **judge}})


def test_a_misspelt_trainer_option_fails_before_anything_runs(scripted, plugin_host,
                                                              register_plugin, tmp_path):
    register_plugin(plugin.dual_tuning, name="dual-tuning")
    with pytest.raises(RecipeError, match=r"\[judge\] trainer\.max_stepz: unknown option "
                                          r"\(trainer 'sft'"):
        Pipeline(recipe(trainer={"use": "sft", "max_stepz": 3}),
                 host=plugin_host).run(tmp_path / "run")
    engine, _ = scripted
    assert engine.calls == []  # the base model was never evaluated


def test_curate_validate_names_the_misspelt_trainer_option(run_cli, tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('[source]\nuse = "synthetic"\nfamilies = ["colour-ops"]\n\n[judge]\n'
                    'use = "dual-tuning"\nbase_model = "some/base"\nengine = "hf"\n'
                    'trainer = { use = "sft", max_stepz = 3 }\n')
    result = run_cli("validate", str(path))
    assert result.exit_code == 2
    assert "[judge] trainer.max_stepz: unknown option (trainer 'sft'" in result.stderr


def test_runtime_options_stay_out_of_the_signature(plugin_host):
    def signature(engine=None, **trainer):
        stage = DualTuningJudge({"base_model": "b", "engine": {"use": "hf", **(engine or {})},
                                 "trainer": {"use": "sft", **trainer}})
        assert check_refs(stage.config, plugin_host) == []  # resolves both
        return stage.signature()

    assert signature() == signature(plot=False, logging_steps=5) == \
        signature(engine={"batch_size": 64})
    assert signature() != signature(learning_rate=1e-3)
