"""``grpo`` and ``gspo``: reinforcement learning with TRL's GRPOTrainer, rewarded by the
verifier (0.9·accuracy + 0.1·format by default).

``gspo`` is GRPO with the sequence-level, length-normalised importance ratio and the
OpenMMReasoner settings: ``importance_sampling_level="sequence"``, ``loss_type="grpo"``,
``beta=0``, clip ``epsilon=3e-4`` / ``epsilon_high=4e-4``, and ``steps_per_generation >
gradient_accumulation_steps`` so that later optimiser steps reuse rollouts off-policy and the
clipped ratio actually does something.

Rollouts generated with transformers (``use_vllm`` off) are row-seeded
(:mod:`dualcurate_trl.rollouts`): each depends on its prompt, sample index, seed and step only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import model_validator

from dualcurate.context import recipe_verifier
from dualcurate.formats import FORMAT_INSTRUCTION
from dualcurate_trl.base import TRLStage
from dualcurate_trl.config import TrainConfig, lora_config, shared_training_args
from dualcurate_trl.data import build_examples, to_dataset, warn_dropped_images
from dualcurate_trl.loading import load_model_and_processor
from dualcurate_trl.rewards import CheckFn, reward_functions

if TYPE_CHECKING:
    import datasets

    from dualcurate import PluginHost, StageContext

FORMAT_SYSTEM_PROMPT = FORMAT_INSTRUCTION


class GRPOStageConfig(TrainConfig):
    """Options of the ``grpo`` stage (docs/trainers.md)."""

    runtime_fields: ClassVar[frozenset[str]] = TrainConfig.runtime_fields | {
        "vllm_mode", "vllm_gpu_memory_utilization"}

    learning_rate: float = 1e-6
    system_prompt: str | None = FORMAT_SYSTEM_PROMPT
    num_generations: int = 8
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    loss_type: str = "dapo"
    importance_sampling_level: Literal["token", "sequence"] = "token"
    steps_per_generation: int | None = None
    accuracy_weight: float = 0.9
    format_weight: float = 0.1
    use_vllm: bool | None = None
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = 0.3


class GSPOStageConfig(GRPOStageConfig):
    """Options of the ``gspo`` stage: GRPO's, with the GSPO settings as defaults."""

    num_generations: int = 16
    beta: float = 0.0
    epsilon: float = 3e-4
    epsilon_high: float | None = 4e-4
    loss_type: str = "grpo"
    importance_sampling_level: Literal["token", "sequence"] = "sequence"

    @model_validator(mode="after")
    def _is_gspo(self) -> GSPOStageConfig:
        if self.importance_sampling_level != "sequence":
            raise ValueError("gspo needs importance_sampling_level='sequence' (that is what GSPO "
                             "is); use the grpo trainer for token-level ratios")
        spg = self.steps_per_generation
        if spg is not None and spg <= self.gradient_accumulation_steps:
            raise ValueError(
                f"steps_per_generation={spg} must exceed gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps}, or every update is on-policy and the "
                f"sequence-level ratio is always 1; raise it or leave it unset "
                f"(default 2 x gradient_accumulation_steps)")
        return self


def vllm_available() -> bool:
    """A CUDA GPU and an importable vllm: TRL can generate with vLLM."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def neutral_generation_config(model: Any) -> Any:
    """Rollouts sample as the stage's options say, never as the checkpoint's
    ``generation_config`` does (Qwen2.5-VL ships ``top_k=1``, ``repetition_penalty=1.05``):
    transformers fills every sampling field the trainer leaves unset from the model's
    generation config, so during training the model carries one with its special tokens only.
    Returns the TrainerCallback that puts the checkpoint's own back when training ends,
    before the model is saved."""
    from transformers import GenerationConfig, TrainerCallback

    original = model.generation_config
    model.generation_config = GenerationConfig(**{
        k: getattr(original, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")})

    class RestoreGenerationConfig(TrainerCallback):
        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model.generation_config = original

    return RestoreGenerationConfig()


class GRPOStage(TRLStage):
    """GRPO on the rows' questions, rewarded by ``dualcurate_verify.check`` against the gold
    answer plus a format reward; generation by vLLM inside TRL when available."""

    name = "grpo"
    Config: ClassVar[type[GRPOStageConfig]] = GRPOStageConfig
    config: GRPOStageConfig
    curve_keys = ("reward", "loss")

    def __init__(self, config: GRPOStageConfig | dict[str, Any] | None = None, *,
                 check: CheckFn | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self._check = check  # a check() for tests; None: the recipe's verifier stage
        # (name, options) of the recipe's verifier, read from the run in prepare(): plain
        # data, carried to accelerate-launched processes by launch_state()
        self._verifier: tuple[str, dict[str, Any]] | None = None

    def preflight(self, host: PluginHost) -> list[str]:
        problems = super().preflight(host)
        if self.config.accuracy_weight and self._check is None and \
                importlib.util.find_spec("dualcurate_verify") is None:
            problems.append("accuracy_weight > 0 needs dualcurate-verify for its check(); "
                            "install it or set accuracy_weight = 0")
        if self.config.use_vllm and importlib.util.find_spec("vllm") is None:
            problems.append("use_vllm = true but vllm is not installed; install it (GPU) or "
                            "leave use_vllm unset")
        return problems

    def steps_per_generation(self) -> int | None:
        return self.config.steps_per_generation

    def launch_state(self) -> dict[str, Any]:
        """The recipe's verifier (read in :meth:`prepare`) and a ``check`` given in Python (by
        import reference), so the launched processes reward as this one would."""
        from dualcurate_trl.launch import object_reference

        return {"verifier": list(self._verifier) if self._verifier else None,
                "check": object_reference(self._check, "check") if self._check else None}

    def restore_launch_state(self, state: dict[str, Any]) -> None:
        from dualcurate_trl.launch import resolve_reference

        verifier = state.get("verifier")
        self._verifier = (str(verifier[0]), dict(verifier[1])) if verifier else None
        if state.get("check"):
            self._check = resolve_reference(state["check"])  # type: ignore[assignment]

    def explain_trl_error(self, exc: Exception) -> str:
        text = str(exc)
        if "divisible by num_generations" not in text:
            return super().explain_trl_error(exc)
        cfg = self.config
        spg = self.steps_per_generation() or cfg.gradient_accumulation_steps
        batch = cfg.per_device_train_batch_size * spg
        return (f"num_generations: {cfg.num_generations} does not divide the generation batch "
                f"(per_device_train_batch_size {cfg.per_device_train_batch_size} x "
                f"steps_per_generation {spg} = {batch} completions per process), so TRL would "
                f"refuse it at the start of training ({text}). Set per_device_train_batch_size "
                f"to a multiple of {cfg.num_generations} (e.g. per_device_train_batch_size = "
                f"{cfg.num_generations}), or num_generations to a divisor of {batch}")

    def prepare(self, dataset: datasets.Dataset, ctx: StageContext,
                vision: bool) -> datasets.Dataset:
        self._verifier = recipe_verifier(ctx)  # the reward scores as the recipe verifies
        images = ctx.images
        examples, stats = build_examples(
            dataset, system_prompt=self.config.system_prompt, vision=vision,
            load_image=images.open if images is not None else None, with_completion=False,
            keep_columns=("answer", "question", "answer_type", "choices"))
        for i, example in enumerate(examples):
            if example.get("answer") is None:
                raise ValueError(f"row {i}: no gold 'answer'; the accuracy reward needs one "
                                 f"per row")
        self.build_stats = {"rows": stats.rows, "examples": stats.examples,
                            "images_dropped": stats.images_dropped}
        warn_dropped_images(ctx, stats.images_dropped, self.config.model)
        return to_dataset(examples, vision)

    def trl_config(self, workdir: Path) -> Any:
        """The ``trl.GRPOConfig`` these options make (``trl_args`` applied last)."""
        from trl import GRPOConfig

        cfg = self.config
        use_vllm = vllm_available() if cfg.use_vllm is None else cfg.use_vllm
        _, weights = reward_functions(cfg.accuracy_weight, cfg.format_weight, self._check)
        kwargs: dict[str, Any] = {
            **shared_training_args(cfg, workdir / "checkpoints"),
            "num_generations": cfg.num_generations,
            "max_completion_length": cfg.max_completion_length,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "top_k": cfg.top_k,
            "min_p": cfg.min_p,
            "repetition_penalty": cfg.repetition_penalty,
            "beta": cfg.beta,
            "epsilon": cfg.epsilon,
            "epsilon_high": cfg.epsilon_high,
            "loss_type": cfg.loss_type,
            "importance_sampling_level": cfg.importance_sampling_level,
            "steps_per_generation": self.steps_per_generation(),
            "reward_weights": weights,
            "use_vllm": use_vllm,
        }
        if use_vllm:
            kwargs["vllm_mode"] = cfg.vllm_mode
            kwargs["vllm_gpu_memory_utilization"] = cfg.vllm_gpu_memory_utilization
        kwargs.update(cfg.trl_args)
        return GRPOConfig(**kwargs)

    def build_trainer(self, train_dataset: datasets.Dataset, workdir: Path, vision: bool,
                      callbacks: list[Any]) -> tuple[Any, Any]:
        from dualcurate_trl.rollouts import row_seeded_trainer_class

        cfg = self.config
        model, processor = load_model_and_processor(cfg.model, cfg.revision, vision,
                                                    dtype=cfg.dtype)
        if not vision:
            processor.padding_side = "left"  # generation pads prompts on the left
        callbacks = [*callbacks, neutral_generation_config(model)]
        name, options = self._verifier or (None, None)
        funcs, _ = reward_functions(cfg.accuracy_weight, cfg.format_weight, self._check,
                                    verifier=name, verifier_options=options)
        trainer_class = row_seeded_trainer_class()
        trainer = trainer_class(model=model, reward_funcs=funcs, args=self.trl_config(workdir),
                                train_dataset=train_dataset, processing_class=processor,
                                peft_config=lora_config(cfg), callbacks=callbacks)
        return trainer, processor


class GSPOStage(GRPOStage):
    """GSPO: GRPO with a sequence-level importance ratio, no KL, tight clipping and
    off-policy steps (``steps_per_generation`` defaults to 2 x gradient_accumulation_steps)."""

    name = "gspo"
    Config: ClassVar[type[GSPOStageConfig]] = GSPOStageConfig
    config: GSPOStageConfig

    def steps_per_generation(self) -> int:
        cfg = self.config
        return cfg.steps_per_generation or 2 * cfg.gradient_accumulation_steps
