"""Hook implementations (thin): each entry point is one plugin object. Nothing here imports
vllm; the engine imports it in ``setup``."""

from __future__ import annotations

from dualcurate import Register, hookimpl


class VLLMEnginePlugin:
    """Entry point ``vllm``: the offline vLLM engine."""

    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        from dualcurate_vllm.engine import VLLMEngine

        register(VLLMEngine)


class VLLMDistillPlugin:
    """Entry point ``vllm-distill``: the teacher distiller on the vllm engine."""

    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        from dualcurate_vllm.distill import VLLMDistiller

        register(VLLMDistiller)

    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        from dualcurate_vllm.engine import VLLMEngine

        register(VLLMEngine)


vllm_engine = VLLMEnginePlugin()
vllm_distill = VLLMDistillPlugin()
