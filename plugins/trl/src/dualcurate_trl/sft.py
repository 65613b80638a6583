"""``sft``: supervised fine-tuning with TRL's SFTTrainer, full or LoRA, text or vision-language,
loss on the assistant turn only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dualcurate_trl.base import TRLStage
from dualcurate_trl.config import TrainConfig, lora_config, shared_training_args
from dualcurate_trl.data import Mode, build_examples, to_dataset, warn_dropped_images
from dualcurate_trl.loading import load_model_and_processor

if TYPE_CHECKING:
    import datasets

    from dualcurate import StageContext


class SFTStageConfig(TrainConfig):
    """Options of the ``sft`` stage (docs/trainers.md)."""

    mode: Mode = "long"
    max_length: int | None = 4096
    #: A teacher allowed more tokens than ``max_length`` is refused by ``curate validate``
    #: unless this is true. Either way an example longer than ``max_length`` is never cut
    #: (its answer would be lost): it is dropped, and the count is reported.
    drop_over_length: bool = False


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content or [] if isinstance(p, dict))


def text_length(example: dict[str, Any], tokenizer: Any) -> int:
    """Tokens of a text example: prompt plus completion through the chat template."""
    messages = [{"role": m["role"], "content": _text_of(m.get("content"))}
                for m in [*example["prompt"], *example["completion"]]]
    try:
        ids = tokenizer.apply_chat_template(messages, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)
    except Exception:  # no chat template: count the texts
        return len(tokenizer("".join(m["content"] for m in messages))["input_ids"])


def vision_length(example: dict[str, Any], processor: Any) -> int:
    """Tokens of a vision-language example as TRL's collator builds it: the prompt rendered
    by the chat template and run through the processor with its images (each image becomes
    as many tokens as the processor expands it into), then the completion."""
    import copy

    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    images = list(example.get("images") or [])
    rendered = apply_chat_template(
        {"prompt": prepare_multimodal_messages(copy.deepcopy(example["prompt"]), images=images),
         "completion": prepare_multimodal_messages(copy.deepcopy(example["completion"]))},
        processor)
    prompt = processor(images=[images] if images else None, text=[rendered["prompt"]],
                       add_special_tokens=False)
    completion = processor(text=[rendered["completion"]], add_special_tokens=False)
    return len(prompt["input_ids"][0]) + len(completion["input_ids"][0])


def drop_over_length(examples: list[dict[str, Any]], model: str, revision: str | None,
                     max_length: int, vision: bool = False) -> list[dict[str, Any]]:
    """The examples whose prompt plus completion, counted as the trainer will see them, fit
    ``max_length``: for a text model the chat template through its tokenizer; for a
    vision-language model the tokens its processor produces, image tokens included."""
    if vision:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(model, revision=revision)
        return [ex for ex in examples if vision_length(ex, processor) <= max_length]
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
    except Exception:  # a processor-only model: count with its tokenizer
        from transformers import AutoProcessor

        tokenizer = AutoProcessor.from_pretrained(model, revision=revision).tokenizer
    return [ex for ex in examples if text_length(ex, tokenizer) <= max_length]


class SFTStage(TRLStage):
    """Supervised fine-tuning on prompt–completion examples built from the rows (see
    :mod:`dualcurate_trl.data`): full weights or LoRA adapters (plus a merged copy)."""

    name = "sft"
    Config: ClassVar[type[SFTStageConfig]] = SFTStageConfig
    config: SFTStageConfig
    curve_keys = ("loss",)

    def check_upstream(self, upstream: list[Any]) -> list[str]:
        cfg = self.config
        if cfg.max_length is None or cfg.mode == "short" or cfg.drop_over_length:
            return []
        for stage in reversed(upstream):
            if getattr(stage, "kind", "") != "distiller":
                continue
            max_tokens = getattr(stage.config, "max_tokens", None)
            if isinstance(max_tokens, int) and max_tokens > cfg.max_length:
                return [f"max_length: {cfg.max_length} tokens is less than the teacher's "
                        f"max_tokens ({max_tokens}, [{stage.name or 'distill'}]) plus its "
                        f"prompt, so every trace longer than {cfg.max_length} tokens would be "
                        f"cut, answer included (how many is known once the teacher has run; "
                        f"they are never trained on: such examples are dropped and counted). "
                        f"Raise max_length above {max_tokens} plus the prompt, lower the "
                        f"teacher's max_tokens, or set drop_over_length = true to train on "
                        f"the traces that fit"]
            break
        return []

    def prepare(self, dataset: datasets.Dataset, ctx: StageContext,
                vision: bool) -> datasets.Dataset:
        images = ctx.images
        examples, stats = build_examples(
            dataset, mode=self.config.mode, system_prompt=self.config.system_prompt,
            vision=vision, load_image=images.open if images is not None else None)
        if self.config.max_length is not None and examples:
            before = len(examples)
            examples = drop_over_length(examples, self.config.model, self.config.revision,
                                        self.config.max_length, vision=vision)
            cut = before - len(examples)
            if cut:
                stats.skipped["longer than max_length"] = cut
                stats.examples = len(examples)
                ctx.log.warning("sft: %d of %d examples are longer than max_length=%d tokens "
                                "(image tokens included) and were dropped (never cut: the "
                                "answer is at the end)", cut, before, self.config.max_length)
        self.build_stats = {"rows": stats.rows, "examples": stats.examples,
                            "skipped": stats.skipped, "images_dropped": stats.images_dropped}
        warn_dropped_images(ctx, stats.images_dropped, self.config.model)
        ctx.log.info("sft: %s", stats.describe())
        return to_dataset(examples, vision)

    def trl_config(self, workdir: Path) -> Any:
        """The ``trl.SFTConfig`` these options make (``trl_args`` applied last)."""
        from trl import SFTConfig

        cfg = self.config
        kwargs = {**shared_training_args(cfg, workdir / "checkpoints"),
                  "max_length": cfg.max_length, "completion_only_loss": True,
                  **cfg.trl_args}
        return SFTConfig(**kwargs)

    def build_trainer(self, train_dataset: datasets.Dataset, workdir: Path, vision: bool,
                      callbacks: list[Any]) -> tuple[Any, Any]:
        from trl import SFTTrainer

        cfg = self.config
        model, processor = load_model_and_processor(cfg.model, cfg.revision, vision,
                                                    dtype=cfg.dtype)
        trainer = SFTTrainer(model=model, args=self.trl_config(workdir),
                             train_dataset=train_dataset, processing_class=processor,
                             peft_config=lora_config(cfg), callbacks=callbacks)
        return trainer, processor
