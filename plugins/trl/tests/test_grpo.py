"""GRPO/GSPO on the tiny model: GSPO trains off-policy with the sequence-level ratio and logs
its clip metrics; the config carries the OpenMMReasoner settings."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from dualcurate import StageContext
from dualcurate.testing.contracts import TrainerContract
from dualcurate_trl import plugin
from dualcurate_trl.grpo import GRPOStage, GSPOStage
from dualcurate_trl.toy import arithmetic_rows, to_hf
from dualcurate_trl.training_log import read_log


def parity_check(gold: str, response: str, question: str | None = None) -> SimpleNamespace:
    """A verifier stand-in whose verdict varies between rollouts of an untrained model, so
    advantages are non-zero and the policy actually moves."""
    return SimpleNamespace(verdict="correct" if len(response) % 2 == 0 else "incorrect")


def test_gspo_config_is_the_paper_recipe(tmp_path: Path) -> None:
    stage = GSPOStage({"model": "m", "gradient_accumulation_steps": 2, "num_generations": 2,
                       "per_device_train_batch_size": 2}, check=parity_check)
    args = stage.trl_config(tmp_path)
    assert args.importance_sampling_level == "sequence"
    assert args.loss_type == "grpo" and args.beta == 0.0
    assert (args.epsilon, args.epsilon_high) == (3e-4, 4e-4)
    assert args.steps_per_generation == 4 > args.gradient_accumulation_steps
    assert args.reward_weights == [0.9, 0.1]
    assert args.use_vllm is False and args.report_to == [] and args.bf16 is False
    assert GSPOStage.Config(model="m").num_generations == 16


def test_gspo_refuses_on_policy_or_token_level_settings() -> None:
    with pytest.raises(ValidationError, match="steps_per_generation=1 must exceed"):
        GSPOStage({"model": "m", "steps_per_generation": 1})
    with pytest.raises(ValidationError, match="importance_sampling_level='sequence'"):
        GSPOStage({"model": "m", "importance_sampling_level": "token"})


def test_grpo_defaults_are_token_level_and_trl_args_pass_through(tmp_path: Path) -> None:
    stage = GRPOStage({"model": "m", "num_generations": 2, "per_device_train_batch_size": 2,
                       "accuracy_weight": 1.0, "format_weight": 0.0,
                       "trl_args": {"max_grad_norm": 0.5}})
    args = stage.trl_config(tmp_path)
    assert args.importance_sampling_level == "token"
    assert args.reward_weights == [1.0]
    assert args.max_grad_norm == 0.5


def test_gspo_trains_off_policy_with_sequence_ratio_and_logs_clip_metrics(
        lm_dir: Path, tmp_path: Path) -> None:
    # One prompt per step with 4 rollouts: a step without an update (every rollout rewarded
    # alike, so no advantage) has odds 1/8, not 1/4 as with 2 prompts x 2 rollouts.
    ctx = StageContext.ephemeral(stage_name="train", root=tmp_path / "run")
    stage = GSPOStage({"model": str(lm_dir), "max_steps": 4, "num_generations": 4,
                       "per_device_train_batch_size": 4, "max_completion_length": 8,
                       "learning_rate": 5e-2, "trl_args": {"gradient_checkpointing": False}},
                      check=parity_check)
    model_dir = stage.train(to_hf(arithmetic_rows(8)), ctx)
    args = json.loads((model_dir / "training_args.json").read_text())
    assert args["importance_sampling_level"] == "sequence"
    assert args["steps_per_generation"] == 2 > args["gradient_accumulation_steps"]
    records = [r for r in read_log(ctx.workdir / "training_log.jsonl") if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        for key in ("clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean"):
            assert 0.0 <= r[key] <= 1.0
    rewarded = [r for r in records if "reward" in r]
    assert len(rewarded) == 2, "one generation every steps_per_generation=2 steps"
    assert any(r["reward_std"] > 0 for r in rewarded)
    # The off-policy steps (2 and 4) reuse rollouts from before an update: with a tight clip
    # range some sequence ratios leave [1 - 3e-4, 1 + 4e-4].
    assert any(records[i]["clip_ratio/region_mean"] > 0 for i in (1, 3)), records
    # Steps 1 and 3 are on-policy (ratio 1, nothing clipped); with one ratio per sequence the
    # clipped fraction counts whole sequences (4 per step).
    assert records[0]["clip_ratio/region_mean"] == records[2]["clip_ratio/region_mean"] == 0
    for r in records:
        assert (r["clip_ratio/region_mean"] * 4) == pytest.approx(
            round(r["clip_ratio/region_mean"] * 4))
    assert (ctx.workdir / "training_curve.png").exists()


def test_gspo_on_a_vision_language_model(llava_dir: Path, tmp_path: Path) -> None:
    from dualcurate_trl.toy import answer_tag_check, colour_rows

    ctx = StageContext.ephemeral(stage_name="train", root=tmp_path / "run")
    stage = GSPOStage({"model": str(llava_dir), "max_steps": 2, "num_generations": 2,
                       "per_device_train_batch_size": 4, "max_completion_length": 6,
                       "trl_args": {"gradient_checkpointing": False}}, check=answer_tag_check)
    model_dir = stage.train(to_hf(colour_rows(ctx)), ctx)
    assert (model_dir / "model.safetensors").exists()
    assert (model_dir / "processor_config.json").exists()
    records = [r for r in read_log(ctx.workdir / "training_log.jsonl") if "loss" in r]
    assert [r["step"] for r in records] == [1, 2]
    assert "rewards/accuracy/mean" in records[0]


class TestGSPOContract(TrainerContract):
    """Format reward only, so the contract does not depend on the verifier plugin."""

    stage_cls = GSPOStage
    plugin = plugin.gspo

    @pytest.fixture(autouse=True)
    def _model(self, lm_dir: Path) -> None:
        self.config = {"model": str(lm_dir), "max_steps": 1, "num_generations": 2,
                       "per_device_train_batch_size": 2, "max_completion_length": 4,
                       "accuracy_weight": 0.0, "format_weight": 1.0,
                       "trl_args": {"gradient_checkpointing": False}}


class TestGRPOContract(TrainerContract):
    """The default reward: accuracy from dualcurate_verify.check plus format."""

    stage_cls = GRPOStage
    plugin = plugin.grpo

    @pytest.fixture(autouse=True)
    def _model(self, lm_dir: Path) -> None:
        self.config = {"model": str(lm_dir), "max_steps": 1, "num_generations": 2,
                       "per_device_train_batch_size": 2, "max_completion_length": 4,
                       "trl_args": {"gradient_checkpointing": False}}
