"""Row-seeded rollouts for ``grpo`` and ``gspo`` when TRL generates with transformers.

A rollout's tokens depend only on its prompt, its sample index, the stage's seed and the
training step, never on which other prompts share the generation batch (the rule the ``hf``
engine follows, ``dualcurate_hf.engine``). Each row draws from its own ``torch.Generator``,
seeded by :func:`rollout_seeds`: a stable hash of (seed, step, the row's prompt token ids
without padding, its images' pixels) plus the row's occurrence among identical prompts in the
batch (TRL repeats each prompt ``num_generations`` times), plus, under several processes, the
process index times the rows per process (a prompt's copies may be split across processes).

:class:`RowSeededGRPOTrainer` overrides TRL's ``_generate_single_turn``: while it runs, the
model's ``generate`` (an instance attribute, removed afterwards) is greedy (``do_sample``
off) over what a ``RowSampler`` leaves, with the trainer's temperature / top-k / top-p /
min-p moved into the sampler; repetition penalty and suppressed tokens still apply first.
vLLM (``use_vllm``) and transformers' continuous batching generate as TRL does: vLLM seeds
per engine, not per sample.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dualcurate.sampling import SamplingParams
from dualcurate_hf.engine import row_generators, sample_rows

SEED_BITS = 63


def _image_digest(image: Any) -> bytes:
    """A PIL image's mode, size and pixels; anything else by its repr."""
    if hasattr(image, "tobytes") and hasattr(image, "size"):
        return hashlib.blake2b(f"{image.mode}|{image.size}|".encode() + image.tobytes(),
                               digest_size=16).digest()
    return repr(image).encode()


def rollout_seeds(seed: int, step: int, prompt_ids: Sequence[Sequence[int]],
                  images: Sequence[Any] | None = None, offset: int = 0) -> list[int]:
    """One seed per row: a stable hash of (``seed``, ``step``, the row's prompt ids, its
    images) plus the row's occurrence among identical rows before it, plus ``offset``."""
    seen: Counter[bytes] = Counter()
    seeds = []
    for i, ids in enumerate(prompt_ids):
        h = hashlib.blake2b(f"{seed}|{step}|".encode(), digest_size=8)
        h.update(",".join(str(int(t)) for t in ids).encode())
        for image in (images[i] or []) if images is not None else []:
            h.update(b"|" + _image_digest(image))
        key = h.digest()
        seeds.append((int.from_bytes(key, "big") + seen[key] + offset) % (1 << SEED_BITS))
        seen[key] += 1
    return seeds


def sampling_of(config: Any) -> SamplingParams:
    """The sampling settings of TRL's generation config, for the row sampler."""
    return SamplingParams(temperature=config.temperature if config.temperature is not None else 1.0,
                          top_p=config.top_p if config.top_p is not None else 1.0,
                          top_k=config.top_k or 0, min_p=config.min_p or 0.0)


@functools.cache
def _row_sampler_class() -> type:
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        """Row ``j``'s token drawn with generator ``j`` alone (``sample_rows``); generation
        then runs greedy over the one token it leaves."""

        def __init__(self, seeds: Sequence[int], sampling: SamplingParams):
            self.generators = row_generators(seeds)
            self.sampling = sampling

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            return sample_rows(scores, self.generators, self.sampling)

    return RowSampler


@contextmanager
def row_seeded_generate(model: Any, config: Any, seeds: Sequence[int]) -> Iterator[Any]:
    """While open, ``model.generate(..., generation_config=config)`` samples row ``j`` with
    ``seeds[j]`` alone: greedy over what the row sampler leaves. Yields the greedy config."""
    from transformers import LogitsProcessorList

    greedy = copy.deepcopy(config)
    greedy.do_sample = False
    greedy.temperature = greedy.top_p = greedy.top_k = greedy.min_p = None
    sampler = _row_sampler_class()(list(seeds), sampling_of(config))
    original = model.generate
    had_own = "generate" in vars(model)

    @functools.wraps(original)
    def generate(*args: Any, **kwargs: Any) -> Any:
        kwargs["generation_config"] = greedy
        kwargs["logits_processor"] = LogitsProcessorList(
            [*(kwargs.get("logits_processor") or []), sampler])
        return original(*args, **kwargs)

    model.generate = generate
    try:
        yield greedy
    finally:
        if had_own:
            model.generate = original
        else:
            del model.generate


@functools.cache
def row_seeded_trainer_class() -> type:
    """``trl.GRPOTrainer`` whose transformers rollouts are row-seeded (module docstring)."""
    from trl import GRPOTrainer

    class RowSeededGRPOTrainer(GRPOTrainer):
        def _generate_single_turn(self, prompt_ids: Any, images: Any, multimodal_fields: Any,
                                  num_generations: int, has_tool_images: bool = False) -> Any:
            config = self.generation_config
            if self.use_vllm or self.use_transformers_continuous_batching or \
                    not config.do_sample or sampling_of(config).temperature <= 0:
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields,
                                                     num_generations, has_tool_images)
            seeds = rollout_seeds(self.args.seed, self.state.global_step, prompt_ids, images,
                                  offset=self.accelerator.process_index * len(prompt_ids))
            model = self.accelerator.unwrap_model(self.model_wrapped)
            with row_seeded_generate(model, config, seeds):
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields,
                                                     num_generations, has_tool_images)

    return RowSeededGRPOTrainer
