"""The ``vllm-distill`` distiller: the teacher distiller on the offline ``vllm`` engine."""

from __future__ import annotations

from dualcurate.distill import TeacherDistiller
from dualcurate.engine import Engine


class VLLMDistiller(TeacherDistiller):
    """The ``teacher`` distiller with ``engine = { use = "vllm" }`` by default (options:
    ``model``, ``max_model_len``, ``tensor_parallel_size``...). The engine is fed across
    shards (the streaming executor overlaps them), so the default ``run.shard_size`` keeps
    vLLM busy; a shard is only the unit of commit and resume."""

    name = "vllm-distill"
    default_engine = "vllm"

    @classmethod
    def engine_class(cls) -> type[Engine]:
        from dualcurate_vllm.engine import VLLMEngine

        return VLLMEngine
