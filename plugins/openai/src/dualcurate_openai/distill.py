"""The ``openai-distill`` distiller: the teacher distiller on the ``openai`` engine."""

from __future__ import annotations

from dualcurate.distill import TeacherDistiller
from dualcurate.engine import Engine


class OpenAIDistiller(TeacherDistiller):
    """Distils reasoning traces from a teacher behind any OpenAI-compatible server
    (the ``teacher`` distiller with its
    engine by default; ``engine`` options: ``model``, ``base_url``, ``api_key_env``, ``max_concurrency``...)."""

    name = "openai-distill"
    default_engine = "openai"

    @classmethod
    def engine_class(cls) -> type[Engine]:
        from dualcurate_openai.engine import OpenAIEngine

        return OpenAIEngine
