"""``sft``: supervised fine-tuning with TRL's SFTTrainer, full or LoRA, text or vision-language,
loss on the assistant turn only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dualcurate_trl.base import TRLStage
from dualcurate_trl.common import (
    TrainConfig,
    common_args,
    load_model_and_processor,
    lora_config,
)
from dualcurate_trl.data import Mode, build_examples, to_dataset, warn_dropped_images

if TYPE_CHECKING:
    import datasets

    from dualcurate import StageContext


class SFTStageConfig(TrainConfig):
    """Options of the ``sft`` stage (docs/trainers.md)."""

    mode: Mode = "long"
    max_length: int | None = 4096


class SFTStage(TRLStage):
    """Supervised fine-tuning on prompt–completion examples built from the rows (see
    :mod:`dualcurate_trl.data`): full weights or LoRA adapters (plus a merged copy)."""

    name = "sft"
    Config: ClassVar[type[SFTStageConfig]] = SFTStageConfig
    config: SFTStageConfig
    curve_keys = ("loss",)

    def prepare(self, dataset: datasets.Dataset, ctx: StageContext,
                vision: bool) -> datasets.Dataset:
        images = ctx.images
        examples, stats = build_examples(
            dataset, mode=self.config.mode, system_prompt=self.config.system_prompt,
            vision=vision, load_image=images.open if images is not None else None)
        self.build_stats = {"rows": stats.rows, "examples": stats.examples,
                            "skipped": stats.skipped, "images_dropped": stats.images_dropped}
        warn_dropped_images(ctx, stats.images_dropped, self.config.model)
        ctx.log.info("sft: %d rows → %d examples (skipped: %s)", stats.rows, stats.examples,
                     stats.skipped or "none")
        return to_dataset(examples, vision)

    def trl_config(self, workdir: Path) -> Any:
        """The ``trl.SFTConfig`` these options make (``trl_args`` applied last)."""
        from trl import SFTConfig

        cfg = self.config
        kwargs = {**common_args(cfg, workdir / "checkpoints"),
                  "max_length": cfg.max_length, "completion_only_loss": True,
                  **cfg.trl_args}
        return SFTConfig(**kwargs)

    def build_trainer(self, train_dataset: datasets.Dataset, workdir: Path, vision: bool,
                      callbacks: list[Any]) -> tuple[Any, Any]:
        from trl import SFTTrainer

        cfg = self.config
        model, processor = load_model_and_processor(cfg.model, cfg.revision, vision)
        trainer = SFTTrainer(model=model, args=self.trl_config(workdir),
                             train_dataset=train_dataset, processing_class=processor,
                             peft_config=lora_config(cfg), callbacks=callbacks)
        return trainer, processor
