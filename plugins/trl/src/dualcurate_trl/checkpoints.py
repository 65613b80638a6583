"""Trainer checkpoints: finding the one to resume from and checking it first, so nothing
pickled is ever loaded unchecked."""

from __future__ import annotations

import re
from pathlib import Path

from dualcurate_trl.errors import TrainerError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Pickle-format files a Trainer checkpoint may hold and transformers reads back with
#: ``torch.load(weights_only=True)``; we load each the same way before resuming.
ALLOWED_TORCH_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")
#: Written by transformers (pickled TrainingArguments) and never read back by it or by us.
NEVER_LOADED = ("training_args.bin",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


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
