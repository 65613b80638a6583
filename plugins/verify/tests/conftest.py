"""Shared fixtures: a scripted judge engine registered through the real plugin host."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import pytest

from dualcurate import (
    ChatRequest,
    Completion,
    Engine,
    EngineConfig,
    Register,
    SamplingParams,
    hookimpl,
)

Reply = Callable[[list[dict[str, Any]]], str]


class ScriptedEngine(Engine):
    """Answers each chat request with ``reply(messages)``; records every request it gets."""

    name = "scripted-judge"
    Config = EngineConfig
    reply: ClassVar[Reply] = staticmethod(lambda messages: "Final Judgment: \\boxed{A}")
    seen: ClassVar[list[list[dict[str, Any]]]] = []

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result=None) -> list[list[Completion]]:
        out = []
        for i, request in enumerate(requests):
            type(self).seen.append(request.messages)
            text = type(self).reply(request.messages)
            comps = [Completion(text=text, finish_reason="stop", prompt_tokens=10,
                                completion_tokens=5) if text is not None
                     else Completion(error="scripted failure")
                     for _ in request.indices()]
            if on_result is not None:
                on_result(i, comps)
            out.append(comps)
        return out


class ScriptedEnginePlugin:
    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        register(ScriptedEngine)


@pytest.fixture
def scripted_engine(plugin_host, register_plugin) -> Iterator[type[ScriptedEngine]]:
    """The scripted engine, registered on ``plugin_host``; set ``.reply`` in the test."""
    register_plugin(ScriptedEnginePlugin(), name="scripted-judge-plugin")
    ScriptedEngine.seen = []
    original = ScriptedEngine.reply
    yield ScriptedEngine
    ScriptedEngine.reply = original
