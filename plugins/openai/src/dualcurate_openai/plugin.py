"""Hook implementations (thin): each entry point is one plugin object. Stage modules are
imported inside the hooks so that listing plugins never imports the OpenAI SDK."""

from __future__ import annotations

from dualcurate import Register, hookimpl


class OpenAIEnginePlugin:
    """Entry point ``openai``: the engine for any OpenAI-compatible server."""

    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        from dualcurate_openai.engine import OpenAIEngine

        register(OpenAIEngine)


class OpenAIDistillPlugin:
    """Entry point ``openai-distill``: the teacher distiller on the openai engine."""

    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        from dualcurate_openai.distill import OpenAIDistiller

        register(OpenAIDistiller)

    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        from dualcurate_openai.engine import OpenAIEngine

        register(OpenAIEngine)


openai_engine = OpenAIEnginePlugin()
openai_distill = OpenAIDistillPlugin()
