"""An engine that needs no model: it answers "What is a + b?" by adding. Used through the
core ``teacher`` distiller (``recipe-teacher.toml``) to show an engine plugin end to end."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from dualcurate import ChatRequest, Completion, Engine, EngineConfig, SamplingParams
from dualcurate.chat import OnResult
from dualcurate.formats import render_trace

SUM = re.compile(r"(\d+)\s*\+\s*(\d+)")


class SumConfig(EngineConfig):
    model: str = "hello-sum"   # EngineConfig requires `model`; this engine has no weights
    wrong_every: int = 0       # every n-th sample of a request answers one too many (0: never)


class SumEngine(Engine):
    """Answers with a think block and the sum; deterministic, so every sample of a request
    is the same unless ``wrong_every`` makes some wrong."""

    name = "hello-sum"
    Config = SumConfig

    def identity(self) -> dict[str, Any]:
        # "weights" given: core does not look for a model "hello-sum" to fingerprint
        return {"model": self.config.model, "revision": None, "endpoint": None,
                "weights": "none: the engine adds"}

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        out = []
        for r, request in enumerate(requests):
            question = _text(request.messages)
            completions = [self._answer(question, i, sampling.max_tokens)
                           for i in request.indices()]
            out.append(completions)
            if on_result is not None:
                on_result(r, completions)
        return out

    def _answer(self, question: str, index: int, max_tokens: int) -> Completion:
        found = SUM.search(question)
        if found is None:
            text = render_trace("There is no sum in the question.", "unknown")
        else:
            a, b = int(found.group(1)), int(found.group(2))
            total = a + b + (1 if self.config.wrong_every and
                             (index + 1) % self.config.wrong_every == 0 else 0)
            text = render_trace(f"{a} plus {b} makes {total}.", str(total))
        words = text.split(" ")
        finish = "stop"
        if len(words) > max_tokens:  # one "token" per word: cut as a real engine would
            words, finish = words[:max_tokens], "length"
        return Completion(text=" ".join(words), finish_reason=finish,
                          prompt_tokens=len(question.split()), completion_tokens=len(words))


def _text(messages: Sequence[dict[str, Any]]) -> str:
    """The text parts of the chat's last user message (images ignored)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return ""
