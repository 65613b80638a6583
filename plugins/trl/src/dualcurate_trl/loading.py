"""Loading the model to train (safetensors only) and its tokenizer or processor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dualcurate_trl.errors import TrainerError


def is_vision_model(model: str, revision: str | None = None) -> bool:
    """True when the model's config has a vision tower (load it as image-text-to-text)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model, revision=revision)
    return getattr(config, "vision_config", None) is not None


def load_model_and_processor(model: str, revision: str | None, vision: bool,
                             dtype: str = "float32") -> tuple[Any, Any]:
    """The model (safetensors only: a ``.bin``-only checkpoint is refused) and its tokenizer or
    processor. ``dtype`` is the dtype the weights are loaded in (``"auto"``: the checkpoint's,
    transformers' default): float32 unless told otherwise, so the optimizer updates float32
    master weights even for a bf16 checkpoint (mixed precision runs the compute in bf16)."""
    import torch
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
    kwargs: dict[str, Any] = {"revision": revision, "use_safetensors": True,
                              "dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
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
