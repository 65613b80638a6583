"""The options every trainer stage takes (:class:`TrainConfig`) and what they become: the
TrainingArguments every stage sets and the LoRA config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from dualcurate import StageConfig


class TrainConfig(StageConfig):
    """Options every trainer stage takes (see docs/trainers.md)."""

    runtime_fields: ClassVar[frozenset[str]] = frozenset(
        {"logging_steps", "save_steps", "save_total_limit", "accelerate_config", "plot"})

    model: str = Field(..., description="model directory or hub id (safetensors weights)")
    revision: str | None = None
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    merge_lora: bool = False
    #: The dtype the weights are loaded and trained in (the optimizer's master weights).
    #: float32 by default: at GSPO's learning rate of 1e-6 most bf16 updates round away.
    #: Compute still runs in bf16 on a GPU that has it (mixed precision). "auto" keeps the
    #: checkpoint's dtype (transformers' default); LoRA adapters stay float32 either way.
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    max_steps: int = -1
    num_train_epochs: float = 1.0
    learning_rate: float = 2e-5
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    seed: int = 0
    system_prompt: str | None = None
    trl_args: dict[str, Any] = Field(default_factory=dict)
    # runtime-only (left out of the signature)
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int | None = 2
    accelerate_config: str | None = None
    plot: bool = True


def device_args() -> dict[str, Any]:
    """Precision/device defaults: bf16 on a GPU that has it, fp32 on CPU."""
    import torch

    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "use_cpu": False}
    return {"bf16": False, "fp16": False, "use_cpu": True}


def shared_training_args(cfg: TrainConfig, output_dir: Path) -> dict[str, Any]:
    """TrainingArguments every stage sets (trl_args are applied on top by the caller)."""
    return {
        "output_dir": str(output_dir),
        "max_steps": cfg.max_steps,
        "num_train_epochs": cfg.num_train_epochs,
        "learning_rate": cfg.learning_rate,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "report_to": [],
        "push_to_hub": False,
        "disable_tqdm": True,
        **device_args(),
    }


def lora_config(cfg: TrainConfig, task_type: str = "CAUSAL_LM") -> Any:
    """A peft LoraConfig from the stage options (None when ``lora`` is off)."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type=task_type)
