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
from typing import TYPE_CHECKING, Any

from dualcurate import (
    ChatRequest,
    Completion,
    Engine,
    EngineConfig,
    SamplingParams,
    Verifier,
    hookimpl,
)
from dualcurate.chat import OnResult
from dualcurate.fingerprint import canonical_json
from dualcurate.formats import render_answer, render_think, split_trace

if TYPE_CHECKING:
    from dualcurate import PluginHost, StageContext
from pydantic import Field

from dualcurate.hookspecs import Register


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
    """Answers by pattern; records every (sample id, sample indices) it was asked for and the
    messages of each sample."""

    name = "scripted"
    Config = ScriptedConfig

    def __init__(self, config: Any = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.calls: list[tuple[str, list[int]]] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}

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
            self.messages[request.request_id] = request.messages
            gold = cfg.answers.get(request.request_id, "")
            completions = []
            for index in request.indices():
                answer = gold if self.is_correct(request.request_id, index, sampling) \
                    else wrong_answer(gold)
                text = render_think(f"rollout {index}",
                                    f"\nThe answer is {render_answer(answer)}")
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


class AnswerJudge(Verifier):
    """A scripted verifier stage: a trace is correct iff its ``<answer>`` equals the gold
    answer (labels A/B as a judge would). Registered by :data:`answer_judge_plugin`."""

    name = "answer-judge"

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            traces = []
            for trace in row.get("traces") or []:
                right = trace.get("answer") == row["answer"]
                traces.append({**trace, "verdict": "correct" if right else "incorrect",
                               "method": "answer-judge", "label": "A" if right else "B"})
            out.append({**row, "traces": traces})
        return out


class _AnswerJudgePlugin:
    @hookimpl
    def dualcurate_register_verifiers(self, register: Register) -> None:
        register(AnswerJudge)


answer_judge_plugin = _AnswerJudgePlugin()


def scripted_check(gold: str, response: str, question: str | None = None) -> str:
    """A stand-in for ``dualcurate_verify.check`` that compares the ``<answer>`` exactly."""
    return "correct" if split_trace(response)[1] == gold.strip() else "incorrect"


# helpers for tests and the benchmark ---------------------------------------------------------
def make_rows(n: int, sources: int = 1) -> list[dict[str, Any]]:
    """``n`` canonical rows with numeric answers, cycling through three domains."""
    from dualcurate import Sample

    return [Sample(source=f"src{i % sources}", domain=("math", "chart", "spatial")[i % 3],
                   question=f"What is {i} + {i}?", answer=str(2 * i),
                   answer_type="number").to_row() for i in range(n)]


def scripted_options(rows: list[dict[str, Any]], patterns: Sequence[Sequence[bool]] | None = None,
                     probabilities: Sequence[float] | None = None,
                     model: str = "scripted-proxy") -> dict[str, Any]:
    """Engine options for :class:`ScriptedEngine` answering ``rows`` by pattern or
    probability."""
    options: dict[str, Any] = {"model": model, "answers": {r["id"]: r["answer"] for r in rows}}
    if patterns is not None:
        options["outcomes"] = {r["id"]: [bool(x) for x in p]
                               for r, p in zip(rows, patterns, strict=True)}
    if probabilities is not None:
        options["probabilities"] = {r["id"]: float(p)
                                    for r, p in zip(rows, probabilities, strict=True)}
    return options


def scripted_host() -> PluginHost:
    """A plugin host (no autoload) with the scripted engine, the answer judge and both
    difficulty filters."""
    from dualcurate import PluginHost
    from dualcurate_difficulty import plugin

    host = PluginHost(autoload=False)
    host.register(scripted_plugin, name="scripted")
    host.register(answer_judge_plugin, name="answer-judge")
    host.register(plugin.difficulty, name="difficulty")
    host.register(plugin.rl_subset, name="rl-subset")
    return host


def run_filter(rows: list[dict[str, Any]], ctx: StageContext, engine: str = "scripted",
               options: dict[str, Any] | None = None, **config: Any) -> list[dict[str, Any]]:
    """Run the difficulty filter once (setup, process, finish, teardown) on ``engine`` with
    ``options`` (its options), with :func:`scripted_check` unless ``use_check`` is false."""
    from dualcurate_difficulty.filter import DifficultyFilter

    stage = DifficultyFilter({"engine": {"use": engine, **(options or {})}, **config})
    stage.check_fn = scripted_check
    stage.setup(ctx)
    try:
        out = stage.process([dict(r) for r in rows], ctx)
        stage.finish(ctx)
        return out
    finally:
        stage.teardown()
