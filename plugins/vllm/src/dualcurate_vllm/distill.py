"""The ``vllm-distill`` distiller: the teacher distiller on the offline ``vllm`` engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualcurate.distill import TeacherDistiller
from dualcurate.engine import Engine
from dualcurate_vllm.engine import VLLM_MISSING, vllm_available

if TYPE_CHECKING:
    from dualcurate.plugins import PluginHost


class VLLMDistiller(TeacherDistiller):
    """Distils reasoning traces from a teacher run by offline vLLM (``engine_options``:
    ``model``, ``max_model_len``, ``tensor_parallel_size``...). The engine is fed across
    shards (the streaming executor overlaps them), so the default ``run.shard_size`` keeps
    vLLM busy; a shard is only the unit of commit and resume."""

    name = "vllm-distill"
    engine_name = "vllm"

    @classmethod
    def engine_class(cls) -> type[Engine]:
        from dualcurate_vllm.engine import VLLMEngine

        return VLLMEngine

    def preflight(self, host: PluginHost) -> list[str]:
        problems = super().preflight(host)
        if not vllm_available():
            problems.insert(0, VLLM_MISSING)
        return problems
