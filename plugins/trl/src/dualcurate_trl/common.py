"""What the SFT and GRPO/GSPO stages share: the config fields, model loading (safetensors
only), checkpoint checks (nothing pickled is ever loaded unchecked), the training log and its
curve, and saving the model directory (full weights, or LoRA adapter + merged copy)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from dualcurate import DualcurateError, StageConfig

log = logging.getLogger("dualcurate.trl")

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Pickle-format files a Trainer checkpoint may hold and transformers reads back with
#: ``torch.load(weights_only=True)``; we load each the same way before resuming.
ALLOWED_TORCH_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")
#: Written by transformers (pickled TrainingArguments) and never read back by it or by us.
NEVER_LOADED = ("training_args.bin",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class TrainerError(DualcurateError):
    """A training input that cannot be used (model, data, checkpoint)."""


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


def is_vision_model(model: str, revision: str | None = None) -> bool:
    """True when the model's config has a vision tower (load it as image-text-to-text)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model, revision=revision)
    return getattr(config, "vision_config", None) is not None


def load_model_and_processor(model: str, revision: str | None, vision: bool,
                             dtype: Any = None) -> tuple[Any, Any]:
    """The model (safetensors only: a ``.bin``-only checkpoint is refused) and its tokenizer or
    processor."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    path = Path(model)
    if path.is_dir() and not any(path.glob("*.safetensors")) and not any(
            path.glob("*.safetensors.index.json")):
        raise TrainerError(f"model {model}: no *.safetensors weights; dualcurate never loads "
                           f"pickled (.bin) weights; convert the checkpoint to safetensors")
    kwargs: dict[str, Any] = {"revision": revision, "use_safetensors": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    cls = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    try:
        loaded = cls.from_pretrained(model, **kwargs)
    except OSError as exc:
        raise TrainerError(f"model {model}: cannot load ({exc}); give a local directory with "
                           f"config.json and *.safetensors, or a hub id") from exc
    if vision:
        processor = AutoProcessor.from_pretrained(model, revision=revision)
    else:
        processor = AutoTokenizer.from_pretrained(model, revision=revision)
    return loaded, processor


def device_args() -> dict[str, Any]:
    """Precision/device defaults: bf16 on a GPU that has it, fp32 on CPU."""
    import torch

    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "use_cpu": False}
    return {"bf16": False, "fp16": False, "use_cpu": True}


def common_args(cfg: TrainConfig, output_dir: Path) -> dict[str, Any]:
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


# checkpoints -------------------------------------------------------------------------------


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders under ``output_dir``, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def verify_checkpoint(checkpoint: Path) -> None:
    """Refuse a checkpoint that would make anything load a pickle unsafely.

    Weights must be safetensors; the optimizer/scheduler/RNG files transformers reads back are
    loaded here first with ``torch.load(weights_only=True)`` (which executes no code), so a
    tampered one fails with its name before training starts; any other pickle-format file is
    refused (nothing would load it, but nothing should put it there either)."""
    import torch

    has_weights = any(checkpoint.glob("*.safetensors")) or any(
        checkpoint.glob("*.safetensors.index.json"))
    for path in sorted(checkpoint.rglob("*")):
        if not path.is_file() or not path.name.endswith(PICKLE_SUFFIXES):
            continue
        rel = path.relative_to(checkpoint)
        if path.name in NEVER_LOADED and path.parent == checkpoint:
            continue
        if path.name in ALLOWED_TORCH_FILES and path.parent == checkpoint:
            try:
                from transformers.trainer_pt_utils import safe_globals

                with safe_globals():
                    torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise TrainerError(
                    f"checkpoint {checkpoint}: {rel} does not load with "
                    f"torch.load(weights_only=True) ({type(exc).__name__}); it may be tampered "
                    f"with. Delete {checkpoint} to restart from the previous checkpoint") from exc
            continue
        raise TrainerError(
            f"checkpoint {checkpoint}: {rel} is a pickle-format file; dualcurate never loads "
            f"pickles. Delete it (weights must be *.safetensors) or delete {checkpoint}")
    if not has_weights:
        raise TrainerError(f"checkpoint {checkpoint}: no *.safetensors weights; delete it to "
                           f"restart from the previous checkpoint")


def resume_checkpoint(output_dir: Path) -> Path | None:
    """The last checkpoint under ``output_dir`` to resume from, verified (None: start fresh)."""
    dirs = [d for d in checkpoint_dirs(output_dir) if (d / "trainer_state.json").exists()]
    if not dirs:
        return None
    verify_checkpoint(dirs[-1])
    return dirs[-1]


# training log and curve ----------------------------------------------------------------------


def make_log_callback(path: Path) -> Any:
    """A TrainerCallback appending every log record (with its step) to ``path`` as JSONL."""
    from transformers import TrainerCallback

    class JsonlLogCallback(TrainerCallback):
        """Appends Trainer logs to training_log.jsonl (main process only)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                record = {"step": state.global_step, "epoch": state.epoch, **logs}
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record, default=float) + "\n")

    return JsonlLogCallback()


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a training_log.jsonl (missing file: none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def plot_curve(records: Iterable[dict[str, Any]], out: Path,
               keys: tuple[str, ...] = ("loss", "reward")) -> Path | None:
    """A PNG of each key in ``keys`` over steps (one panel each); None if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    series = {k: [(r["step"], r[k]) for r in records if isinstance(r.get(k), int | float)]
              for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, axes = plt.subplots(len(series), 1, figsize=(6, 2.6 * len(series)), squeeze=False)
    for ax, (key, points) in zip(axes[:, 0], series.items(), strict=True):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# saving ---------------------------------------------------------------------------------------


@dataclass
class SavedModel:
    """Where a finished run put its model: ``model`` (full weights, or the LoRA adapter) and,
    for LoRA with ``merge_lora``, ``merged`` (base + adapter, full weights)."""

    model: Path
    merged: Path | None = None


def _replace_dir(target: Path) -> Path:
    tmp = target.with_name(f".tmp-{target.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp


def _commit_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def _replace_pickled_args(trainer: Any, folder: Path) -> None:
    """transformers pickles TrainingArguments as training_args.bin: keep JSON instead, so the
    model folder holds no pickle at all."""
    (folder / "training_args.bin").unlink(missing_ok=True)
    (folder / "training_args.json").write_text(trainer.args.to_json_string(), encoding="utf-8")


def save_outputs(trainer: Any, processor: Any, workdir: Path, merge_lora: bool) -> SavedModel:
    """Save the trained model to ``workdir/model`` (and ``workdir/model-merged`` for LoRA with
    ``merge_lora``), each with its tokenizer/processor, all safetensors. Folders appear by
    rename, so an interrupted save never leaves half a model."""
    from accelerate.utils import is_peft_model

    target = workdir / "model"
    main = trainer.args.should_save
    tmp = _replace_dir(target) if main else target.with_name(f".tmp-{target.name}")
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # collective under accelerate: every rank calls it
    if not main:
        return SavedModel(model=target)
    processor.save_pretrained(str(tmp))
    _replace_pickled_args(trainer, tmp)
    _commit_dir(tmp, target)
    saved = SavedModel(model=target)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if merge_lora and is_peft_model(model):
        merged_target = workdir / "model-merged"
        merged_tmp = _replace_dir(merged_target)
        merged = model.merge_and_unload()
        merged.save_pretrained(str(merged_tmp), safe_serialization=True)
        processor.save_pretrained(str(merged_tmp))
        _replace_pickled_args(trainer, merged_tmp)
        _commit_dir(merged_tmp, merged_target)
        saved.merged = merged_target
    return saved


def finish(trainer: Any, processor: Any, workdir: Path, cfg: TrainConfig,
           curve_keys: tuple[str, ...]) -> SavedModel:
    """Save the model, then draw the curve from the JSONL log."""
    saved = save_outputs(trainer, processor, workdir, cfg.merge_lora)
    if cfg.plot and trainer.args.should_save:
        plot_curve(read_log(workdir / "training_log.jsonl"), workdir / "training_curve.png",
                   curve_keys)
    return saved
