"""Training reproduces: the same seed on the same data gives the same weights (sft, gspo);
GRPO/GSPO rollouts sample as the stage's options say, never as the checkpoint's generation
config says."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

from dualcurate import StageContext
from dualcurate_trl.grpo import GSPOStage
from dualcurate_trl.sft import SFTStage
from dualcurate_trl.toy import arithmetic_rows, to_hf

NO_CKPT = {"trl_args": {"gradient_checkpointing": False}}
GSPO = {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 4,
        "max_completion_length": 8, "learning_rate": 1e-2, **NO_CKPT}


def parity_check(gold: str, response: str, question: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(verdict="correct" if len(response) % 2 == 0 else "incorrect")


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def _train(stage, rows, root: Path) -> Path:
    ctx = StageContext.ephemeral(stage_name="train", root=root)
    return stage.train(to_hf(rows), ctx)


def test_sft_twice_with_one_seed_gives_the_same_bytes(lm_dir: Path, tmp_path: Path) -> None:
    cfg = {"model": str(lm_dir), "mode": "long", "max_steps": 3, "learning_rate": 1e-3,
           "per_device_train_batch_size": 2, "seed": 3, **NO_CKPT}
    rows = arithmetic_rows(6)
    a = _train(SFTStage(cfg), rows, tmp_path / "a")
    b = _train(SFTStage(cfg), rows, tmp_path / "b")
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    c = _train(SFTStage({**cfg, "seed": 4}), rows, tmp_path / "c")
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_gspo_twice_with_one_seed_gives_the_same_weights(lm_dir: Path, tmp_path: Path) -> None:
    rows = arithmetic_rows(4)
    cfg = {"model": str(lm_dir), "seed": 5, **GSPO}
    a = _weights(_train(GSPOStage(cfg, check=parity_check), rows, tmp_path / "a"))
    b = _weights(_train(GSPOStage(cfg, check=parity_check), rows, tmp_path / "b"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    c = _weights(_train(GSPOStage({**cfg, "seed": 6}, check=parity_check), rows,
                        tmp_path / "c"))
    assert any(not a[k].equal(c[k]) for k in a)


def test_the_checkpoints_generation_config_does_not_reach_the_rollouts(
        lm_dir: Path, tmp_path: Path) -> None:
    """A checkpoint saved with Qwen2.5-VL's near-greedy sampling (top_k=1, top_p=0.001,
    temperature=0.1, repetition_penalty=1.05) plus a field TRL leaves unset (typical_p):
    GSPO's rollouts of one prompt still differ (T=1, no top-k/top-p), and the saved model
    keeps the checkpoint's generation config."""
    from transformers import GenerationConfig

    greedy = {"top_k": 1, "top_p": 0.001, "temperature": 0.1, "repetition_penalty": 1.05,
              "typical_p": 0.001}
    config = GenerationConfig.from_pretrained(lm_dir)
    config.update(**greedy)
    config.save_pretrained(lm_dir)
    seen: dict[str, list[str]] = defaultdict(list)

    def recording_check(gold: str, response: str, question: str | None = None):
        seen[question or ""].append(response)
        return parity_check(gold, response)

    model_dir = _train(GSPOStage({"model": str(lm_dir), **GSPO}, check=recording_check),
                       arithmetic_rows(4), tmp_path / "run")
    assert seen and all(len(group) >= 4 for group in seen.values())
    for question, group in seen.items():
        first = group[:4]  # the first generation batch: 4 rollouts of this prompt
        assert len(set(first)) > 1, (question, first)
    saved = GenerationConfig.from_pretrained(model_dir)
    assert {k: getattr(saved, k) for k in greedy} == greedy
