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

from pydantic import PrivateAttr

from dualcurate.context import StageContext
from dualcurate.errors import DualcurateError
from dualcurate.recipe import TrainerRef
from dualcurate.schema import rows_to_table

MARKER = "dualtuning-model.json"
#: Applied when the trainer's Config has the field and the recipe does not set it: LoRA
#: (cheap, as in the paper's setting), merged so any engine can load the result.
TRAINER_DEFAULTS: dict[str, Any] = {"lora": True, "merge_lora": True}


class NoTrainingExamples(DualcurateError):
    """A model was asked for with nothing to train it on."""


class BaseModelTrainerRef(TrainerRef):
    """The trainer the judge runs (``trainer = { use = "sft", ...options }``), starting from
    the judge's ``base_model``. Resolving it (``curate validate`` does, or the first use)
    completes its options to what the trainer gets: the base model under the option the
    trainer class names for it (``Trainer.model_field``, ``model`` by default), and
    :data:`TRAINER_DEFAULTS` the trainer's Config takes and the recipe leaves unset. So they
    are validated with the rest, and a misspelt trainer option fails before the base model
    is evaluated."""

    _base_model: str | None = PrivateAttr(default=None)

    def starts_from(self, model: str) -> None:
        """Set the model training starts from (the judge's ``base_model``)."""
        self._base_model = model

    def resolve(self, host: Any) -> type:
        cls = super().resolve(host)
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        fields = getattr(getattr(cls, "Config", None), "model_fields", {})
        for key, value in TRAINER_DEFAULTS.items():
            if key in fields:
                extra.setdefault(key, value)
        if self._base_model is not None:
            extra[getattr(cls, "model_field", "model")] = self._base_model
        self.__pydantic_extra__ = extra
        return cls


def train_model(ctx: StageContext, tag: str, trainer: TrainerRef,
                examples: list[dict[str, Any]], seed: int) -> Path:
    """Train on ``examples`` (rows with ``prompt``/``completion``) and return the model dir.
    The trainer gets ``trainer``'s options, and the judge's ``seed`` when its Config has a
    ``seed`` the recipe leaves unset."""
    import datasets

    if not examples:
        raise NoTrainingExamples(f"dual-tuning: no training examples for the {tag!r} model; "
                                 f"the groups it needs have no training rows (or, for L, no "
                                 f"verified traces)")
    cls = ctx.resolve(trainer)
    options = trainer.options
    if "seed" in getattr(getattr(cls, "Config", None), "model_fields", {}):
        options.setdefault("seed", seed)
    base_model = options.get(getattr(cls, "model_field", "model"))
    blob = json.dumps({"trainer": trainer.use, "options": options, "base": base_model,
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
    stage = cls(options)
    train = getattr(stage, "train", None)
    if train is None:
        raise DualcurateError(f"dual-tuning: trainer {trainer.use!r} ({cls.__name__}) has "
                              f"no train(dataset, ctx); pick a trainer plugin such as sft")
    stage.setup(sub)
    try:
        model_dir = Path(train(datasets.Dataset(rows_to_table(examples)), sub))
    finally:
        stage.teardown()
    model_dir = loadable_model(stage, model_dir, trainer.use)
    marker.write_text(json.dumps({"model_dir": str(model_dir), "examples": len(examples),
                                  "trainer": trainer.use}, indent=2))
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
                          f"merge_lora = true in the judge's trainer options")
