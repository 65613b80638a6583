"""Saving a finished run's model directory (full weights, or LoRA adapter + merged copy), all
safetensors, then drawing its curve."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualcurate_trl.config import TrainConfig
from dualcurate_trl.training_curve import plot_curve
from dualcurate_trl.training_log import read_log


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
