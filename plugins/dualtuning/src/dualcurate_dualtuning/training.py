"""Training a model through the configured trainer plugin, once per distinct training set.

Each model lives in ``<workdir>/models/<tag>-<signature>``: the signature covers the trainer,
its options, the base model, the seed and every training example, so a rerun of a judge that
failed after training reuses the model, and a changed training set never reuses a stale one
(nor its cached generations, which are keyed by the model path).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from dualcurate.context import StageContext
from dualcurate.errors import DualcurateError
from dualcurate.schema import rows_to_table
from dualcurate_dualtuning.components import component, host_of

MARKER = "dualtuning-model.json"
#: Config fields through which trainers take the model to start from, in order of preference.
BASE_MODEL_FIELDS = ("model", "base_model", "model_name_or_path")
#: Applied when the trainer's Config has the field and the user did not set it: LoRA (cheap,
#: as in the paper's setting), merged so any engine can load the result.
TRAINER_DEFAULTS: dict[str, Any] = {"lora": True, "merge_lora": True}


class NoTrainingExamples(DualcurateError):
    """A model was asked for with nothing to train it on."""


def trainer_options(ctx: StageContext, trainer: str, options: dict[str, Any],
                    base_model: str, seed: int) -> dict[str, Any]:
    """``options`` plus the base model under whichever field the trainer's Config has, and
    :data:`TRAINER_DEFAULTS` and the judge's seed where the trainer has those fields and
    ``options`` does not set them."""
    cls = component(host_of(ctx), "trainer", trainer)
    fields = getattr(getattr(cls, "Config", None), "model_fields", {})
    defaults = {**TRAINER_DEFAULTS, "seed": seed}
    merged = {**{k: v for k, v in defaults.items() if k in fields}, **options}
    if not any(name in merged for name in BASE_MODEL_FIELDS):
        for name in BASE_MODEL_FIELDS:
            if name in fields:
                merged[name] = base_model
                break
    return merged


def train_model(ctx: StageContext, tag: str, trainer: str, options: dict[str, Any],
                base_model: str, examples: list[dict[str, Any]], seed: int) -> Path:
    """Train on ``examples`` (rows with ``prompt``/``completion``) and return the model dir."""
    import datasets

    if not examples:
        raise NoTrainingExamples(f"dual-tuning: no training examples for the {tag!r} model; "
                                 f"the groups it needs have no training rows (or, for L, no "
                                 f"verified traces)")
    options = trainer_options(ctx, trainer, options, base_model, seed)
    blob = json.dumps({"trainer": trainer, "options": options, "base": base_model,
                       "seed": seed, "examples": examples}, sort_keys=True, default=str)
    signature = hashlib.sha256(blob.encode()).hexdigest()[:12]
    models = ctx.workdir / "models"
    # the same examples under another tag (validation's "everything" in dual mode is the dual
    # model's training set) reuse the finished model too
    for marker in sorted(models.glob(f"*-{signature}/{MARKER}")):
        done = json.loads(marker.read_text())
        if Path(done["model_dir"]).is_dir():
            ctx.log.info("dual-tuning: reusing the model trained earlier on the same examples: "
                         "%s", done["model_dir"])
            return Path(done["model_dir"])
    workdir = models / f"{tag}-{signature}"
    marker = workdir / MARKER
    workdir.mkdir(parents=True, exist_ok=True)
    sub = dataclasses.replace(ctx, stage_name=f"{ctx.stage_name}.{tag}", workdir=workdir,
                              seed=seed)
    stage = ctx.make_stage("trainer", trainer, options)
    train = getattr(stage, "train", None)
    if train is None:
        raise DualcurateError(f"dual-tuning: trainer {trainer!r} ({type(stage).__name__}) has "
                              f"no train(dataset, ctx); pick a trainer plugin such as sft")
    stage.setup(sub)
    try:
        model_dir = Path(train(datasets.Dataset(rows_to_table(examples)), sub))
    finally:
        stage.teardown()
    model_dir = loadable_model(stage, model_dir, trainer)
    marker.write_text(json.dumps({"model_dir": str(model_dir), "examples": len(examples),
                                  "trainer": trainer}, indent=2))
    return model_dir


def loadable_model(stage: Any, model_dir: Path, trainer: str) -> Path:
    """A directory an engine can load: the trainer's output, or for LoRA adapters the merged
    copy the trainer saved beside them."""
    if not model_dir.is_dir():
        raise DualcurateError(f"dual-tuning: trainer {trainer!r} returned {model_dir}, which "
                              f"is not a directory")
    if not (model_dir / "adapter_config.json").is_file():
        return model_dir
    saved = getattr(stage, "saved", None)
    for candidate in (getattr(saved, "merged", None), model_dir.with_name(
            f"{model_dir.name}-merged")):
        if candidate is not None and Path(candidate).is_dir():
            return Path(candidate)
    raise DualcurateError(f"dual-tuning: trainer {trainer!r} saved LoRA adapters only "
                          f"({model_dir}); engines evaluate full weights, so set "
                          f"merge_lora = true in trainer_options")
