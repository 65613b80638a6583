"""Sampling settings: the options every stage that generates takes (:class:`SamplingOptions`)
and the complete settings of a request (:class:`SamplingParams`), which every engine applies
as given and which are all part of the cache key.

Seeds: sample ``i`` of a request has seed ``sampling.seed_for(i, request)``, the request's own
base seed plus ``i``, whatever else is cached or sent with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from dualcurate.chat import ChatRequest

#: Sampling settings every engine applies itself, whatever the checkpoint's own generation
#: config or the server's defaults say: they are fields of :class:`SamplingParams`, never
#: ``extra`` keys.
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                   "max_tokens", "seed", "stop")


class SamplingOptions(BaseModel):
    """The sampling options every stage that generates takes, under these names (the
    teacher's and the difficulty filter's Configs derive from it; a stage may change a
    default by declaring the field again). :meth:`sampling_params` makes the request's
    :class:`SamplingParams` from them."""

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    max_tokens: int = Field(1024, ge=1)

    def sampling_params(self, seed: int | None, stop: list[str] | None = None,
                        extra: dict[str, Any] | None = None) -> SamplingParams:
        options = {name: getattr(self, name) for name in SamplingOptions.model_fields}
        return SamplingParams(**options, seed=seed, stop=stop, extra=dict(extra or {}))


class SamplingParams(SamplingOptions):
    """Sampling settings; all of them are part of the cache key.

    Complete on purpose: every engine applies each field as given, so a checkpoint's own
    ``generation_config`` (Qwen2.5-VL-Instruct ships ``top_k = 1`` and
    ``repetition_penalty = 1.05``) or a server's defaults (``vllm serve`` applies the model's
    generation config) never change what the recipe asked for. ``top_k = 0`` keeps every
    token, ``min_p = 0`` and ``repetition_penalty = 1`` turn those off; ``temperature = 0`` is
    greedy. ``extra`` holds engine-specific options only (``chat_template_kwargs``, a
    server's own parameters); a field's name there is refused."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = None
    stop: list[str] | None = None
    extra: dict[str, Any] = {}

    @field_validator("extra")
    @classmethod
    def _no_fields_in_extra(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(set(value) & set(SAMPLING_FIELDS))
        if clash:
            raise ValueError(f"{', '.join(clash)} in the engine-specific extras: "
                             f"set {' and '.join(clash)} as a sampling option of its own")
        return value

    def seed_for(self, sample_index: int, request: ChatRequest | None = None) -> int | None:
        """The seed of one sample: the request's base seed (from ``seed`` and the request's
        content, so questions do not share random streams) plus ``sample_index``. Consecutive
        samples have consecutive seeds, as vLLM seeds the children of an ``n > 1`` request
        (``seed + i``), so one request for samples ``a..b`` with seed ``seed_for(a)`` draws
        exactly what ``b - a + 1`` single requests would."""
        if self.seed is None:
            return None
        base = request.seed_base(self.seed) if request is not None else self.seed
        return base + sample_index


def checkpoint_overrides(shipped: dict[str, Any], sampling: SamplingParams) -> str | None:
    """The run-log note of an engine whose model ships sampling defaults (``shipped``: the
    checkpoint's generation_config settings that differ from the library's defaults): what it
    sets and what the request's sampling uses instead; None when it sets none."""
    if not shipped:
        return None
    ours = {**{name: getattr(sampling, name) for name in SamplingOptions.model_fields},
            "do_sample": sampling.temperature > 0,
            "no_repeat_ngram_size": sampling.extra.get("no_repeat_ngram_size", 0)}
    theirs = ", ".join(f"{k}={v!r}" for k, v in sorted(shipped.items()))
    used = ", ".join(f"{k}={ours[k]!r}" for k in sorted(shipped) if k in ours)
    ignored = sorted(k for k in shipped if k not in ours)
    note = f"the checkpoint's generation_config sets {theirs}; this run uses "
    note += used or "the recipe's sampling"
    if ignored:
        note += f" ({', '.join(ignored)} not applied)"
    return note
