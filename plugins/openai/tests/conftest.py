"""Fixtures: a scripted OpenAI-compatible server on 127.0.0.1 per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dualcurate_openai.testing import ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_ambient_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not pick up a developer's real endpoint or key."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
