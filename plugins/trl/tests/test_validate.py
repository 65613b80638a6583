"""`curate validate` refuses what TRL or the trainer would refuse hours later: the TRL config is
built for real, and SFT's max_length is checked against the teacher's max_tokens; at train time
an example longer than max_length is dropped and counted, never cut."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualcurate import Pipeline, RecipeError, load_recipe
from dualcurate.plugins import PluginHost
from dualcurate_trl.grpo import GSPOStage
from dualcurate_trl.sft import SFTStage, drop_over_length


def _host() -> PluginHost:
    host = PluginHost(autoload=False)
    for name in ("synthetic", "reference", "hf", "hf-distill", "rule-verify", "sft", "gspo"):
        host.load(name)
    return host


def _recipe(train: dict, distill: dict | None = None) -> dict:
    return {"run": {"shard_size": 8},
            "source": {"use": "synthetic", "train_per_family": 2, "eval_per_family": 1},
            "distill": distill or {"use": "reference"},
            "verify": {"use": "rule-verify"},
            "train": train}


def test_gspo_defaults_fail_validation_naming_the_option(plugin_host) -> None:
    problems = GSPOStage({"model": "some/model"}).preflight(plugin_host)
    assert len(problems) == 1
    assert "num_generations: 16" in problems[0]
    assert "per_device_train_batch_size" in problems[0]
    ok = GSPOStage({"model": "some/model", "per_device_train_batch_size": 16})
    assert ok.preflight(plugin_host) == []


def test_curate_validate_exits_2_on_gspo_defaults(run_cli) -> None:
    recipe = Path(run_cli("plugins").cwd) / "r.toml"
    recipe.write_text('[source]\nuse = "synthetic"\ntrain_per_family = 2\n'
                      'eval_per_family = 1\n[train]\nuse = "gspo"\nmodel = "some/model"\n')
    result = run_cli("validate", str(recipe))
    assert result.exit_code == 2
    assert "[train]" in result.stderr and "num_generations" in result.stderr
    fixed = run_cli("validate", str(recipe), "--set", "train.per_device_train_batch_size=16")
    assert fixed.exit_code == 0, fixed.stderr


def test_sft_max_length_below_teacher_max_tokens_is_refused(tmp_path: Path) -> None:
    distill = {"use": "hf-distill", "engine": {"model": str(tmp_path)},
               "max_tokens": 16384}
    with pytest.raises(RecipeError) as err:
        Pipeline(load_recipe(_recipe({"use": "sft", "model": "m"}, distill)),
                 host=_host()).validate()
    text = str(err.value)
    assert "[train] max_length: 4096" in text and "16384" in text
    assert "drop_over_length" in text
    for extra in ({"max_length": 20000}, {"drop_over_length": True}, {"mode": "short"}):
        Pipeline(load_recipe(_recipe({"use": "sft", "model": "m", **extra}, distill)),
                 host=_host()).validate()


def test_examples_longer_than_max_length_are_dropped_not_cut(lm_dir: Path) -> None:
    def example(text: str) -> dict:
        return {"prompt": [{"role": "user", "content": "q"}],
                "completion": [{"role": "assistant", "content": text}]}

    short, long = example("<answer>1</answer>"), example("word " * 400 + "<answer>2</answer>")
    kept = drop_over_length([short, long, short], str(lm_dir), None, 128)
    assert kept == [short, short]
    assert drop_over_length([long], str(lm_dir), None, 100_000) == [long]


def test_sft_prepare_reports_how_many_were_dropped(lm_dir: Path, stage_context) -> None:
    import datasets

    rows = [{"id": str(i), "question": "q", "answer": "1", "images": [],
             "traces": [{"reasoning": "x " * (300 * i), "answer": "1", "verdict": "correct",
                         "truncated": False}]} for i in range(3)]
    stage = SFTStage({"model": str(lm_dir), "max_length": 128})
    out = stage.prepare(datasets.Dataset.from_list(rows), stage_context, vision=False)
    assert len(out) == 1
    assert stage.build_stats["skipped"] == {"longer than max_length": 2}
