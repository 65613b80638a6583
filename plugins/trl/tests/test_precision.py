"""Trainable weights are float32 by default, whatever dtype the checkpoint was saved in: a
bf16 checkpoint trained with bf16 master weights loses GSPO's 1e-6 updates to rounding."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualcurate import StageContext
from dualcurate_trl.grpo import GSPOStage
from dualcurate_trl.sft import SFTStage
from dualcurate_trl.toy import answer_tag_check, arithmetic_rows, to_hf

NO_CKPT = {"trl_args": {"gradient_checkpointing": False}}
GSPO_SMALL = {"num_generations": 2, "per_device_train_batch_size": 2,
              "max_completion_length": 4, **NO_CKPT}


@pytest.fixture
def bf16_lm_dir(lm_dir: Path, tmp_path: Path) -> Path:
    """The tiny LM saved in bfloat16 (as Qwen2.5-VL ships)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "bf16"
    model = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.bfloat16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(lm_dir).save_pretrained(out)
    return out


def _trainer(stage, tmp_path: Path):
    ctx = StageContext.ephemeral(stage_name="train", root=tmp_path / "run")
    ds = stage.prepare(to_hf(arithmetic_rows(2)), ctx, vision=False)
    trainer, _ = stage.build_trainer(ds, ctx.workdir, False, [])
    return trainer


def _trainable_dtypes(trainer) -> set:
    return {p.dtype for p in trainer.model.parameters() if p.requires_grad}


@pytest.mark.parametrize("stage_cls, extra", [(SFTStage, {"mode": "short", **NO_CKPT}),
                                              (GSPOStage, GSPO_SMALL)])
def test_a_bf16_checkpoint_trains_float32_weights(bf16_lm_dir: Path, tmp_path: Path,
                                                   stage_cls, extra) -> None:
    import torch

    stage = stage_cls({"model": str(bf16_lm_dir), "max_steps": 1, **extra},
                      **({"check": answer_tag_check} if stage_cls is GSPOStage else {}))
    assert _trainable_dtypes(_trainer(stage, tmp_path)) == {torch.float32}


def test_dtype_auto_keeps_the_checkpoints_dtype(bf16_lm_dir: Path, tmp_path: Path) -> None:
    import torch

    stage = SFTStage({"model": str(bf16_lm_dir), "mode": "short", "max_steps": 1,
                      "dtype": "auto", **NO_CKPT})
    assert _trainable_dtypes(_trainer(stage, tmp_path)) == {torch.bfloat16}


def test_lora_adapters_are_float32_on_a_bf16_base(bf16_lm_dir: Path, tmp_path: Path) -> None:
    import torch

    for dtype, base in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        stage = SFTStage({"model": str(bf16_lm_dir), "mode": "short", "max_steps": 1,
                          "lora": True, "lora_r": 4, "dtype": dtype, **NO_CKPT})
        trainer = _trainer(stage, tmp_path / dtype)
        assert _trainable_dtypes(trainer) == {torch.float32}
        frozen = {p.dtype for p in trainer.model.parameters() if not p.requires_grad}
        assert frozen == {base}


def test_an_update_at_lr_1e_6_changes_a_bf16_checkpoints_weights(bf16_lm_dir: Path,
                                                                  tmp_path: Path) -> None:
    from safetensors.torch import load_file

    ctx = StageContext.ephemeral(stage_name="train", root=tmp_path / "run")
    stage = SFTStage({"model": str(bf16_lm_dir), "mode": "short", "max_steps": 1,
                      "learning_rate": 1e-6, **NO_CKPT})
    model_dir = stage.train(to_hf(arithmetic_rows(4)), ctx)
    before = load_file(bf16_lm_dir / "model.safetensors")
    after = load_file(model_dir / "model.safetensors")
    changed = [name for name in before
               if not before[name].float().equal(after[name].float())]
    # Adam moves every weight with a gradient by about lr; in bf16 (8 bits of mantissa) a
    # step of 1e-6 on weights of size ~0.02 rounds away. In float32 it does not.
    assert len(changed) >= len(before) // 2, (len(changed), len(before))
    name = "model.layers.0.mlp.down_proj.weight"
    delta = (after[name].float() - before[name].float()).abs()
    assert delta.max().item() <= 1.5e-6 and (delta > 0).float().mean().item() > 0.5
