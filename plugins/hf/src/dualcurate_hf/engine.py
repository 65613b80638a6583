"""The ``hf`` engine: transformers models in this process, batched across ``generate`` calls.

Loads once per worker in ``setup``: a vision-language model (its config maps to
``AutoModelForImageTextToText``, or has a ``vision_config``) with ``AutoProcessor``, otherwise
``AutoModelForCausalLM`` with ``AutoTokenizer``. torch and transformers are imported only in
``setup``.

One worker thread owns the model (torch does not run concurrent ``generate`` calls on one model
safely). ``generate`` may be called from several threads at once (``concurrent_generate``):
each call renders its chat prompts, expands every request into one row per sample, queues the
rows and blocks until its own rows are done. The worker forms every batch of up to
``batch_size`` rows from whatever is queued, whichever call the rows came from, so a batch is
not cut short at a call boundary while other calls have rows waiting. Rows in one batch share
their sampling settings (rows are grouped by the canonical JSON of their ``SamplingParams``).
A batch starts from the oldest queued row and is filled with the rows of its group whose
prompt lengths are closest to it (less padding); always taking the oldest row bounds how long
any row waits. Images are decoded to PIL when their row is batched, not when it is queued.
``on_result(i, completions)`` is called once per request, as soon as its last sample is done,
on the calling thread (the worker goes on with the next batch meanwhile).

An exception while generating a batch becomes ``Completion(error=...)`` for that batch's rows
(an image that cannot be read fails only its own row); the worker goes on. ``close()`` stops
the worker (a batch in progress stops at its next token) and makes every ``generate`` call
still waiting raise ``DualcurateError``.

Sampling is batch-invariant: sample ``i`` of request ``r`` draws its tokens from its own
``torch.Generator`` seeded with ``sampling.seed_for(i, r)`` (one uniform number per step,
turned into a token through the row's own distribution), so which rows share a batch, the
batch size, how many threads call the engine and what was cached never change which random
numbers a sample uses. The numbers it samples from must not change either: rows are left
padded with their attention mask (transformers derives position ids from it), and on the CPU
the default ``dtype = "auto"`` computes in float64, where the batch moves a row's logits by
float64 rounding at most (~1e-16: a draw would flip about once in 10^15); in float32 they
move in the 7th digit with the batch's shape, which flips about one draw in a million. On CUDA, ``auto`` is bfloat16: draws are
still per sample, but the kernels' rounding depends on the batch, so a sample can differ
with its batch mates; ``batch_size = 1`` makes it a function of its request alone there too.

The sampling settings are the request's, complete: generation runs with an explicit
configuration (temperature, top-k, top-p, min-p, repetition penalty from
:class:`SamplingParams`; ``no_repeat_ngram_size`` from ``extra``), never the checkpoint's
``generation_config`` sampling defaults, and the first call logs which of those defaults it
overrode.
"""

from __future__ import annotations

import functools
import heapq
import io
import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from dualcurate.chat import ChatRequest, Completion, OnResult
from dualcurate.engine import Engine, LocalModelConfig
from dualcurate.errors import DualcurateError
from dualcurate.fingerprint import canonical_json
from dualcurate.sampling import SamplingParams, checkpoint_overrides
from dualcurate.window import ENGINE_CLOSED, ResultMailbox

if TYPE_CHECKING:
    from dualcurate.chat import ImageResolver
    from dualcurate.context import StageContext

#: ``sampling.extra`` keys this engine takes (anything else is refused, never ignored).
ENGINE_EXTRA = ("chat_template_kwargs", "no_repeat_ngram_size")
#: Checkpoint ``generation_config`` fields that shape what is sampled: generation sets each
#: of them explicitly, so a checkpoint's value never applies (the run log names overrides).
SAMPLING_DEFAULTS = ("do_sample", "num_beams", "temperature", "top_k", "top_p", "min_p",
                     "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty",
                     "no_repeat_ngram_size", "encoder_repetition_penalty", "min_new_tokens",
                     "min_length", "length_penalty", "bad_words_ids", "sequence_bias",
                     "suppress_tokens", "begin_suppress_tokens")
#: Put on a call's queue by ``close()``: the call raises instead of waiting.
_CLOSED = ENGINE_CLOSED


class HFEngineConfig(LocalModelConfig):
    """``model``: local directory or hub id; ``revision``: branch, tag or commit;
    ``trust_remote_code`` runs the model repository's own Python, so it needs a pinned commit
    (40 hex digits) unless ``model`` is a local directory. ``dtype = "auto"``: float64 on the
    CPU (batch-invariant sampling, see the module docstring), bfloat16 on CUDA."""

    dtype: Literal["auto", "float64", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    batch_size: int = Field(8, ge=1)

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "batch_size"})


@dataclass(eq=False)
class _Call:
    """One ``generate`` call: its requests, their rendered prompts (text, image hashes), the
    results filled in by the worker, and the queue on which the worker reports each request
    whose samples are all done."""

    requests: Sequence[ChatRequest]
    sampling: SamplingParams
    prompts: list[tuple[str, list[str]]]
    results: list[list[Completion]]
    remaining: list[int]
    finished: ResultMailbox = field(default_factory=ResultMailbox)
    cancelled: bool = False


@dataclass(eq=False)
class _Row:
    """One sample of one request of one call, waiting for a batch."""

    call: _Call
    request: int  # index in call.requests
    pos: int  # index in call.results[request]
    sample: int  # sample index (seed_for)
    group: str  # canonical JSON of the sampling settings: only equal groups share a batch
    length: int  # rendered prompt length in characters, to batch similar lengths
    seed: int | None
    seq: int = 0  # queue order


@functools.cache
def _stop_criterion_class() -> type:
    import torch
    from transformers import StoppingCriteria

    class StopOnClose(StoppingCriteria):
        """Ends a batch in progress once the engine is closing."""

        def __init__(self, stop: threading.Event):
            self.stop = stop

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), self.stop.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    return StopOnClose


def sample_rows(scores: Any, generators: Sequence[Any], sampling: SamplingParams) -> Any:
    """One token per row of ``scores`` (batch × vocab), row ``j`` drawn with
    ``generators[j]`` alone: temperature, top-k, top-p and min-p applied in float64 (as
    transformers and vLLM order them), then one uniform number from the row's generator
    picks a token through the row's cumulative distribution. A row's token depends only on its
    own scores and generator, never on the other rows."""
    import torch

    logits = scores.to(torch.float64) / sampling.temperature
    vocab = logits.shape[-1]
    if 0 < sampling.top_k < vocab:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        before = ordered.cumsum(-1) - ordered  # the mass of the tokens ranked above each one
        probs = probs.masked_fill(torch.zeros_like(probs, dtype=torch.bool).scatter(
            -1, order, before >= sampling.top_p), 0.0)
    if sampling.min_p > 0.0:
        probs = probs.masked_fill(probs < sampling.min_p * probs.amax(-1, keepdim=True), 0.0)
    draws = torch.tensor([float(torch.rand((), generator=g, dtype=torch.float64))
                          for g in generators], dtype=torch.float64, device=probs.device)
    cdf = probs.cumsum(-1)
    tokens = torch.searchsorted(cdf, (draws * cdf[:, -1]).unsqueeze(-1), right=True)
    tokens = tokens.clamp(max=vocab - 1)
    return torch.full_like(scores, float("-inf")).scatter(-1, tokens, 0.0)


def row_generators(seeds: Sequence[int | None]) -> list[Any]:
    """One CPU ``torch.Generator`` per row, seeded with the row's seed (unseeded rows draw
    from fresh entropy)."""
    import torch

    generators = []
    for seed in seeds:
        gen = torch.Generator()
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(seed)
        generators.append(gen)
    return generators


@functools.cache
def _row_sampler_class() -> type:
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        """Samples each row with its own generator (:func:`sample_rows`); generation then
        runs greedy over the one token it leaves."""

        def __init__(self, seeds: Sequence[int | None], sampling: SamplingParams):
            self.generators = row_generators(seeds)
            self.sampling = sampling

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            return sample_rows(scores, self.generators, self.sampling)

    return RowSampler


def _split_generation_config(shipped: Any) -> tuple[dict[str, Any], Any]:
    """A checkpoint's generation config split into its sampling settings (the fields of
    :data:`SAMPLING_DEFAULTS` it sets to other than transformers' defaults) and a config
    holding only its token ids, which replaces it on the model so none of those settings can
    fill a field a call leaves unset."""
    from transformers import GenerationConfig

    blank = GenerationConfig()
    defaults = {**GenerationConfig._get_default_generation_params(), "repetition_penalty": 1.0,
                "no_repeat_ngram_size": 0, "typical_p": 1.0, "epsilon_cutoff": 0.0,
                "eta_cutoff": 0.0, "encoder_repetition_penalty": 1.0, "min_new_tokens": None,
                "length_penalty": 1.0}
    settings = {}
    for name in SAMPLING_DEFAULTS:
        value = getattr(shipped, name, None)
        if value is not None and value != defaults.get(name, getattr(blank, name, None)):
            settings[name] = value
    ids = {name: getattr(shipped, name, None) for name in
           ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id")}
    return settings, GenerationConfig(**{k: v for k, v in ids.items() if v is not None})


class HFEngine(Engine):
    """Generates with a transformers model loaded in this process."""

    name = "hf"
    Config = HFEngineConfig
    config: HFEngineConfig
    #: generate() may be called from several threads at once; their rows share the batches.
    concurrent_generate: ClassVar[bool] = True

    def __init__(self, config: HFEngineConfig | dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.model: Any = None
        self.processor: Any = None
        self.tokenizer: Any = None
        self.is_vlm = False
        self.device: Any = None
        self._load_lock = threading.Lock()
        self._cond = threading.Condition()
        self._queue: list[_Row] = []  # in queue order (seq)
        self._calls: set[_Call] = set()  # calls waiting for their rows
        self._seq = itertools.count()
        self._worker: threading.Thread | None = None
        self._stop: threading.Event | None = None  # the running worker's stop signal
        self._shipped_sampling: dict[str, Any] = {}  # the checkpoint's sampling defaults
        self._noted: set[str] = set()
        self._log = logging.getLogger("dualcurate")

    # lifecycle ------------------------------------------------------------------------------
    def setup(self, ctx: StageContext | None = None, resolve_image: ImageResolver | None = None) -> None:
        super().setup(ctx, resolve_image)
        if ctx is not None:
            self._log = ctx.log
        with self._load_lock:  # two threads' first generate() must not load the model twice
            if self.model is None:
                self._load()

    def _load(self) -> None:
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
            dtype = {"cuda": "bfloat16", "cpu": "float64"}.get(self.device.type, "float32")
        model_cls = AutoModelForImageTextToText if self.is_vlm else AutoModelForCausalLM
        model = model_cls.from_pretrained(cfg.model, dtype=getattr(torch, dtype), **common)
        model.to(self.device).eval()
        self._shipped_sampling, model.generation_config = _split_generation_config(
            model.generation_config)
        if self.is_vlm:
            self.processor = AutoProcessor.from_pretrained(cfg.model, **common)
            self.tokenizer = self.processor.tokenizer
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, **common)
            self.processor = self.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model  # last: generate() takes a model that is set as fully loaded

    def _note_overrides(self, sampling: SamplingParams) -> None:
        """Log once per sampling setting which checkpoint defaults the request's overrode."""
        key = canonical_json(sampling.model_dump(mode="json", exclude={"seed", "stop"}))
        if key in self._noted:
            return
        self._noted.add(key)
        note = checkpoint_overrides(self._shipped_sampling, sampling)
        if note:
            self._log.info("engine hf: model %s: %s", self.config.model, note)

    def close(self) -> None:
        """Stop the worker (a batch in progress ends at its next token), make every
        ``generate`` call still waiting raise, and release the model."""
        with self._cond:
            worker, stop = self._worker, self._stop
            self._worker = self._stop = None
            if stop is not None:
                stop.set()
            calls, self._calls = self._calls, set()
            self._queue = []
            for call in calls:
                call.cancelled = True
                call.finished.put(_CLOSED)
            self._cond.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        if self.model is None:
            return
        self.model = self.processor = self.tokenizer = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # prompts --------------------------------------------------------------------------------
    def _render(self, request: ChatRequest, template_kwargs: dict[str, Any]) -> tuple[str, list[str]]:
        """The rendered chat prompt of one request and its images' hashes (in order)."""
        hashes = []
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
                        hashes.append(part["image"])
                        parts.append({"type": "image"})
                    else:
                        parts.append(part)
                if not self.is_vlm:  # text chat templates expect a string
                    parts = "".join(p.get("text", "") for p in parts)  # type: ignore[assignment]
                msg = {**msg, "content": parts}
            messages.append(msg)
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=False, **template_kwargs)
        return text, hashes

    def _decode_images(self, hashes: list[str]) -> list[Any]:
        from PIL import Image

        return [Image.open(io.BytesIO(self.image_bytes(h))).convert("RGB") for h in hashes]

    # generation -----------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        if not requests:
            return []
        if self.model is None:
            self.setup()
        unknown = sorted(set(sampling.extra) - set(ENGINE_EXTRA))
        if unknown:
            raise DualcurateError(f"engine hf: sampling extras {', '.join(unknown)} are not "
                                  f"options of this engine (it takes {', '.join(ENGINE_EXTRA)} "
                                  f"there); remove them from sampling_extra")
        self._note_overrides(sampling)
        template_kwargs = dict(sampling.extra.get("chat_template_kwargs") or {})
        prompts = [self._render(r, template_kwargs) for r in requests]
        call = _Call(requests=requests, sampling=sampling, prompts=prompts,
                     results=[[Completion()] * len(r.indices()) for r in requests],
                     remaining=[len(r.indices()) for r in requests])
        group = canonical_json(sampling.model_dump(mode="json"))
        rows = [_Row(call, ri, pos, idx, group, len(prompts[ri][0]), sampling.seed_for(idx, r))
                for ri, r in enumerate(requests) for pos, idx in enumerate(r.indices())]
        for ri, count in enumerate(call.remaining):
            if count == 0:  # a request for no samples is done already
                call.finished.put(ri)
        with self._cond:
            for row in rows:
                row.seq = next(self._seq)
            self._queue.extend(rows)
            self._calls.add(call)
            self._start_worker()
            self._cond.notify()
        try:
            call.finished.deliver(call.results, on_result, lambda left: (
                f"engine hf: the engine was closed while generate() waited for {left} of its "
                f"{len(requests)} requests"))
        finally:
            with self._cond:  # done, failed or interrupted: its rows leave the queue
                self._calls.discard(call)
                if call.finished.delivered < len(requests):
                    call.cancelled = True
                    self._queue = [r for r in self._queue if r.call is not call]
        return call.results

    def _start_worker(self) -> None:
        """Start the worker thread unless it runs (called holding ``_cond``)."""
        if self._worker is not None and self._worker.is_alive():
            return
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, args=(self._stop,), daemon=True,
                                        name=f"dualcurate-hf-{self.config.model}")
        self._worker.start()

    def _work(self, stop: threading.Event) -> None:
        """The worker: take a batch from the queue, generate it, report its rows; repeat."""
        try:
            while True:
                with self._cond:
                    while not self._queue and not stop.is_set():
                        self._cond.wait()
                    if stop.is_set():
                        return
                    batch = self._take_batch()
                completions = self._run_rows(batch, stop)
                if stop.is_set():
                    return
                for row, comp in zip(batch, completions, strict=True):
                    call = row.call
                    if call.cancelled:
                        continue
                    call.results[row.request][row.pos] = comp
                    call.remaining[row.request] -= 1
                    if call.remaining[row.request] == 0:
                        call.finished.put(row.request)
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            with self._cond:
                if self._stop is stop:
                    self._worker = self._stop = None
                calls, self._calls = self._calls, set()
                self._queue = []
            for call in calls:
                call.cancelled = True
                call.finished.put(_CLOSED)
            raise DualcurateError(f"engine hf: worker failed: {exc}") from exc

    def _take_batch(self) -> list[_Row]:
        """Up to ``batch_size`` queued rows that share sampling settings (called holding
        ``_cond``, with rows queued). The oldest row always goes in, so no row waits longer
        than the rows queued before it take; the others are the rows of its group whose
        prompt lengths are closest to its own (less padding), older first on ties. Plain FIFO
        would pad a short prompt to a long one whenever calls interleave; sorting all queued
        rows by length would starve long prompts while short ones keep arriving."""
        size = self.config.batch_size
        first = self._queue[0]
        if size == 1:
            self._queue.pop(0)
            return [first]
        same = [r for r in itertools.islice(self._queue, 1, None) if r.group == first.group]
        if len(same) >= size:
            same = heapq.nsmallest(size - 1, same,
                                   key=lambda r: (abs(r.length - first.length), r.seq))
        batch = sorted([first, *same], key=lambda r: r.seq)
        taken = {id(r) for r in batch}
        self._queue = [r for r in self._queue if id(r) not in taken]
        return batch

    def _run_rows(self, batch: list[_Row], stop: threading.Event | None = None) -> list[Completion]:
        """Completions of a batch of rows: images decoded now (a row whose images cannot be
        read fails alone), then one ``_generate_batch``; an exception there fails the batch's
        rows, never the worker."""
        out: list[Completion | None] = [None] * len(batch)
        prompts: list[tuple[str, list]] = []
        ready: list[int] = []
        for i, row in enumerate(batch):
            text, hashes = row.call.prompts[row.request]
            try:
                prompts.append((text, self._decode_images(hashes) if hashes else []))
                ready.append(i)
            except Exception as exc:
                request = row.call.requests[row.request]
                out[i] = Completion(error=f"engine hf: cannot read the images of request "
                                          f"{request.request_id or row.request}: "
                                          f"{type(exc).__name__}: {exc}")
        if ready:
            sampling = batch[0].call.sampling
            seeds = [batch[i].seed for i in ready]
            try:
                comps = self._generate_batch(prompts, sampling, seeds, stop)
            except Exception as exc:
                self._after_failure()
                comps = [Completion(error=f"engine hf: a batch of {len(ready)} rows failed: "
                                          f"{type(exc).__name__}: {exc}")] * len(ready)
            for i, comp in zip(ready, comps, strict=True):
                out[i] = comp
        return [c if c is not None else Completion(error="engine hf: no result") for c in out]

    def _after_failure(self) -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # after an out-of-memory error the next batch may fit
        except Exception:
            pass

    def _generate_batch(self, prompts: list[tuple[str, list]], sampling: SamplingParams,
                        seeds: Sequence[int | None] | None = None,
                        stop: threading.Event | None = None) -> list[Completion]:
        """Generate one batch: ``prompts`` are (rendered text, PIL images) pairs, ``seeds`` the
        rows' own seeds (see the module docstring)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        texts = [p[0] for p in prompts]
        images = [img for p in prompts for img in p[1]]
        if self.is_vlm:
            enc = self.processor(text=texts, images=images or None, padding=True,
                                 return_tensors="pt")
        else:
            enc = self.tokenizer(texts, padding=True, return_tensors="pt",
                                 add_special_tokens=False)
        enc = enc.to(self.device)
        if enc.get("pixel_values") is not None and enc["pixel_values"].is_floating_point():
            enc["pixel_values"] = enc["pixel_values"].to(self.model.dtype)
        # Greedy over what the row sampler leaves: every sampling setting is explicit here
        # (the model's generation_config holds token ids only, see _split_generation_config).
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens, "do_sample": False, "num_beams": 1,
            "pad_token_id": self.tokenizer.pad_token_id,
            "repetition_penalty": sampling.repetition_penalty,
            "no_repeat_ngram_size": int(sampling.extra.get("no_repeat_ngram_size") or 0)}
        processors = LogitsProcessorList()
        if sampling.temperature > 0:
            processors.append(_row_sampler_class()(
                list(seeds) if seeds is not None else [None] * len(texts), sampling))
        kwargs["logits_processor"] = processors
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if stop is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_stop_criterion_class()(stop)])
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
            for stop_text in sampling.stop or []:
                cut = text.find(stop_text)
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
