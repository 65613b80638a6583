"""The ``hf`` engine: transformers models in this process, batched.

Loads once per worker in ``setup``: a vision-language model (its config maps to
``AutoModelForImageTextToText``, or has a ``vision_config``) with ``AutoProcessor``, otherwise
``AutoModelForCausalLM`` with ``AutoTokenizer``. ``generate`` expands every request into one
row per sample, sorts rows by prompt length (less padding), and runs ``batch_size`` rows at a
time with left padding. torch and transformers are imported only in ``setup``.

Seeds: each batch is seeded from ``sampling.seed`` and the batch's (prompt, sample index)
pairs, so a fixed seed reproduces the same outputs for the same requests and batch size, and
k samples of one prompt differ.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from dualcurate.cache import canonical_json
from dualcurate.engine import (
    ChatRequest,
    Completion,
    Engine,
    LocalModelConfig,
    OnResult,
    SamplingParams,
)
from dualcurate.errors import DualcurateError

if TYPE_CHECKING:
    from dualcurate.context import StageContext
    from dualcurate.engine import ImageResolver

#: ``sampling.extra`` keys passed on to ``model.generate``.
GENERATE_EXTRA = ("top_k", "min_p", "repetition_penalty", "no_repeat_ngram_size", "typical_p")


class HFEngineConfig(LocalModelConfig):
    """``model``: local directory or hub id; ``revision``: branch, tag or commit;
    ``trust_remote_code`` runs the model repository's own Python, so it needs a pinned commit
    (40 hex digits) unless ``model`` is a local directory."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    batch_size: int = Field(8, ge=1)

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "batch_size"})



class HFEngine(Engine):
    """Generates with a transformers model loaded in this process."""

    name = "hf"
    Config = HFEngineConfig
    config: HFEngineConfig

    def __init__(self, config: HFEngineConfig | dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.model: Any = None
        self.processor: Any = None
        self.tokenizer: Any = None
        self.is_vlm = False
        self.device: Any = None

    # lifecycle ------------------------------------------------------------------------------
    def setup(self, ctx: StageContext | None = None, resolve_image: ImageResolver | None = None) -> None:
        super().setup(ctx, resolve_image)
        if self.model is not None:
            return
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        cfg = self.config
        common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
        try:
            model_config = AutoConfig.from_pretrained(cfg.model, **common)
        except (OSError, ValueError) as exc:
            raise DualcurateError(f"engine hf: cannot load model {cfg.model!r} (revision "
                                  f"{cfg.revision}): {exc}. Give a local model directory or a "
                                  f"hub id that is downloaded or reachable") from exc
        self.is_vlm = (model_config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
                       or hasattr(model_config, "vision_config"))
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        dtype = cfg.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        model_cls = AutoModelForImageTextToText if self.is_vlm else AutoModelForCausalLM
        self.model = model_cls.from_pretrained(cfg.model, dtype=getattr(torch, dtype), **common)
        self.model.to(self.device).eval()
        if self.is_vlm:
            self.processor = AutoProcessor.from_pretrained(cfg.model, **common)
            self.tokenizer = self.processor.tokenizer
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, **common)
            self.processor = self.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def close(self) -> None:
        if self.model is None:
            return
        self.model = self.processor = self.tokenizer = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # prompts --------------------------------------------------------------------------------
    def _prompt(self, request: ChatRequest, template_kwargs: dict[str, Any]) -> tuple[str, list]:
        """The rendered chat prompt of one request and its images (PIL, in order)."""
        from PIL import Image

        images = []
        messages = []
        for msg in request.messages:
            content = msg.get("content")
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part.get("type") == "image":
                        if not self.is_vlm:
                            raise DualcurateError(
                                f"engine hf: model {self.config.model!r} is text-only but "
                                f"request {request.request_id or '?'} has images; use a "
                                f"vision-language model (one AutoModelForImageTextToText "
                                f"loads) or drop the images")
                        if self.resolve_image is None:
                            raise DualcurateError("engine hf: a request has an image but no "
                                                  "image store was given; call setup(ctx)")
                        data = self.resolve_image(part["image"])
                        images.append(Image.open(io.BytesIO(data)).convert("RGB"))
                        parts.append({"type": "image"})
                    else:
                        parts.append(part)
                if not self.is_vlm:  # text chat templates expect a string
                    parts = "".join(p.get("text", "") for p in parts)  # type: ignore[assignment]
                msg = {**msg, "content": parts}
            messages.append(msg)
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=False, **template_kwargs)
        return text, images

    # generation -----------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        if self.model is None:
            self.setup()
        template_kwargs = dict(sampling.extra.get("chat_template_kwargs") or {})
        prompts = [self._prompt(r, template_kwargs) for r in requests]
        results: list[list[Completion]] = [[Completion()] * len(r.indices()) for r in requests]
        remaining = [len(r.indices()) for r in requests]
        rows = [(ri, pos, idx) for ri, r in enumerate(requests)
                for pos, idx in enumerate(r.indices())]
        rows.sort(key=lambda row: len(prompts[row[0]][0]))
        size = self.config.batch_size
        for start in range(0, len(rows), size):
            batch = rows[start:start + size]
            completions = self._generate_batch([prompts[ri] for ri, _, _ in batch],
                                               [requests[ri].messages for ri, _, _ in batch],
                                               [idx for _, _, idx in batch], sampling)
            for (ri, pos, _), comp in zip(batch, completions, strict=True):
                results[ri][pos] = comp
                remaining[ri] -= 1
                if remaining[ri] == 0 and on_result is not None:
                    on_result(ri, results[ri])
        return results

    def _generate_batch(self, prompts: list[tuple[str, list]], messages: list[Any],
                        indices: list[int], sampling: SamplingParams) -> list[Completion]:
        import torch

        texts = [p[0] for p in prompts]
        images = [img for p in prompts for img in p[1]]
        if self.is_vlm:
            enc = self.processor(text=texts, images=images or None, padding=True,
                                 return_tensors="pt")
        else:
            enc = self.tokenizer(texts, padding=True, return_tensors="pt",
                                 add_special_tokens=False)
        enc = enc.to(self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens,
                                  "pad_token_id": self.tokenizer.pad_token_id}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature,
                          top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        kwargs.update({k: v for k, v in sampling.extra.items() if k in GENERATE_EXTRA})
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if sampling.seed is not None:
            digest = hashlib.sha256(canonical_json([sampling.seed, messages, indices]).encode())
            torch.manual_seed(int.from_bytes(digest.digest()[:8], "little") % (2**63))
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1]:].tolist()
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        eos = self._eos_ids()
        completions = []
        for ids, prompt_len in zip(new_tokens, prompt_lengths, strict=True):
            end = next((i + 1 for i, t in enumerate(ids) if t in eos), None)
            used = ids[:end] if end is not None else ids
            if end is None:  # a row stopped early (stop string) is padded to the batch's length
                pad = self.tokenizer.pad_token_id
                while used and used[-1] == pad:
                    used = used[:-1]
            text = self.tokenizer.decode(used, skip_special_tokens=True)
            stopped = end is not None
            for stop in sampling.stop or []:
                cut = text.find(stop)
                if cut >= 0:
                    text, stopped = text[:cut], True
            finish = "stop" if stopped or len(used) < sampling.max_tokens else "length"
            completions.append(Completion(text=text, finish_reason=finish,
                                          prompt_tokens=int(prompt_len),
                                          completion_tokens=len(used)))
        return completions

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids
