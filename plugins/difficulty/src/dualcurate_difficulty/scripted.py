"""A scripted engine for tests and benchmarks: it answers each sample right or wrong by a fixed
pattern (or a per-sample success probability), with no model at all.

Requests are matched to samples by ``request_id`` (the difficulty filter sets it to the sample
id). Rollout ``i`` is correct when ``outcomes[id][i]`` is true, or, for samples given a
``probabilities[id]``, when a draw seeded by the id and ``sampling.seed_for(i)`` falls below it.
A correct rollout answers ``<answer>{gold}</answer>``, a wrong one a different answer, so both
the real ``dualcurate_verify.check`` and a scripted check can verify it. Not registered by any
entry point: tests register :data:`scripted_plugin` themselves.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

from dualcurate import ChatRequest, Completion, Engine, EngineConfig, SamplingParams, hookimpl
from dualcurate.cache import canonical_json
from dualcurate.engine import OnResult
from dualcurate.hookspecs import Register
from pydantic import Field


class ScriptedConfig(EngineConfig):
    """Outcomes per sample id; ``answers`` holds the gold answers to echo when correct."""

    model: str = "scripted"
    answers: dict[str, str] = Field(default_factory=dict)
    outcomes: dict[str, list[bool]] = Field(default_factory=dict)
    probabilities: dict[str, float] = Field(default_factory=dict)


def wrong_answer(gold: str) -> str:
    """An answer that differs from ``gold``."""
    try:
        return str(int(gold.strip()) + 1)
    except ValueError:
        return f"not {gold}" if gold else "nothing"


class ScriptedEngine(Engine):
    """Answers by pattern; records every (sample id, sample indices) it was asked for."""

    name = "scripted"
    Config = ScriptedConfig

    def __init__(self, config: Any = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.calls: list[tuple[str, list[int]]] = []

    def identity(self) -> dict[str, Any]:
        cfg = self.config.model_dump(mode="json")
        digest = hashlib.sha256(canonical_json(cfg).encode()).hexdigest()[:16]
        return {"model": self.config.model, "revision": None, "endpoint": None,
                "script": digest}

    def is_correct(self, sample_id: str, index: int, sampling: SamplingParams) -> bool:
        cfg: ScriptedConfig = self.config  # type: ignore[assignment]
        if sample_id in cfg.outcomes:
            pattern = cfg.outcomes[sample_id]
            return bool(pattern[index]) if index < len(pattern) else False
        p = cfg.probabilities.get(sample_id, 0.0)
        seed = f"{sample_id}\x1f{sampling.seed_for(index)}\x1f{index}"
        return random.Random(hashlib.sha256(seed.encode()).hexdigest()).random() < p

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        cfg: ScriptedConfig = self.config  # type: ignore[assignment]
        out = []
        for ri, request in enumerate(requests):
            self.calls.append((request.request_id, request.indices()))
            gold = cfg.answers.get(request.request_id, "")
            completions = []
            for index in request.indices():
                answer = gold if self.is_correct(request.request_id, index, sampling) \
                    else wrong_answer(gold)
                text = f"<think>rollout {index}</think>\nThe answer is <answer>{answer}</answer>"
                completions.append(Completion(text=text, finish_reason="stop", prompt_tokens=8,
                                              completion_tokens=len(text.split())))
            if on_result is not None:
                on_result(ri, completions)
            out.append(completions)
        return out


class _ScriptedPlugin:
    """Registers the scripted engine (for tests: ``register_plugin(scripted_plugin)``)."""

    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        register(ScriptedEngine)


scripted_plugin = _ScriptedPlugin()


def scripted_check(gold: str, response: str, question: str | None = None) -> str:
    """A stand-in for ``dualcurate_verify.check`` that compares the ``<answer>`` exactly."""
    from dualcurate_difficulty.rollouts import extract_answer

    return "correct" if extract_answer(response) == gold.strip() else "incorrect"
