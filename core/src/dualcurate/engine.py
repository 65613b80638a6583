"""The Engine interface (hf, vllm, openai implement it) and the cached generation path.

Requests are OpenAI-style chat messages; an image is a content part
``{"type": "image", "image": "<sha256 of the bytes in the run's image store>"}``, so a request
is small, hashable and never carries re-encoded pixels. Engines resolve hashes to bytes through
the resolver given at ``setup``.

Engines are fed, not called once per shard. The streaming executor runs several shards at once,
each in its own thread, so ``generate`` is called from several threads: an engine that sets
``concurrent_generate = True`` shares one capacity (``capacity()`` samples at once) across
every call and starts a request of one call as soon as a request of another finishes; an
engine that leaves it False is called one call at a time (correct, but it drains at every
call boundary). Seeds: sample ``i`` of a request has seed ``sampling.seed_for(i, request)``,
the request's own base seed plus ``i``, whatever else is cached or sent with it.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dualcurate.cache import RequestCache, canonical_json, request_keys
from dualcurate.config import StageConfig, code_versions, coerce_config
from dualcurate.errors import DualcurateError
from dualcurate.fingerprint import model_fingerprint
from dualcurate.window import GenerationCancelled, GenerationWindow

if TYPE_CHECKING:
    from dualcurate.context import StageContext

ImageResolver = Callable[[str], bytes]
#: Base seeds lie below this, so base + sample index stays a valid 32-bit seed.
SEED_SPACE = 2**30
#: ``on_result(i, completions)`` once request ``i`` is answered. A callback with the attribute
#: ``accepts_partial = True`` (``generate_cached``'s) may instead be called as
#: ``on_result(i, completions, positions)`` with some of the request's samples as they arrive
#: (``positions`` index ``request.indices()``), so each is cached the moment it is in.
OnResult = Callable[..., None]


#: Sampling settings every engine applies itself, whatever the checkpoint's own generation
#: config or the server's defaults say: they are fields of :class:`SamplingParams`, never
#: ``extra`` keys.
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                   "max_tokens", "seed", "stop")


class SamplingOptions(BaseModel):
    """The sampling options every stage that generates takes, under these names (the
    teacher's and the difficulty filter's Configs derive from it; a stage may change a
    default by declaring the field again). :meth:`sampling_params` makes the request's
    :class:`SamplingParams` from them."""

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    max_tokens: int = Field(1024, ge=1)

    def sampling_params(self, seed: int | None, stop: list[str] | None = None,
                        extra: dict[str, Any] | None = None) -> SamplingParams:
        options = {name: getattr(self, name) for name in SamplingOptions.model_fields}
        return SamplingParams(**options, seed=seed, stop=stop, extra=dict(extra or {}))


class SamplingParams(SamplingOptions):
    """Sampling settings; all of them are part of the cache key.

    Complete on purpose: every engine applies each field as given, so a checkpoint's own
    ``generation_config`` (Qwen2.5-VL-Instruct ships ``top_k = 1`` and
    ``repetition_penalty = 1.05``) or a server's defaults (``vllm serve`` applies the model's
    generation config) never change what the recipe asked for. ``top_k = 0`` keeps every
    token, ``min_p = 0`` and ``repetition_penalty = 1`` turn those off; ``temperature = 0`` is
    greedy. ``extra`` holds engine-specific options only (``chat_template_kwargs``, a
    server's own parameters); a field's name there is refused."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = None
    stop: list[str] | None = None
    extra: dict[str, Any] = {}

    @field_validator("extra")
    @classmethod
    def _no_fields_in_extra(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(set(value) & set(SAMPLING_FIELDS))
        if clash:
            raise ValueError(f"{', '.join(clash)} in the engine-specific extras: "
                             f"set {' and '.join(clash)} as a sampling option of its own")
        return value

    def seed_for(self, sample_index: int, request: ChatRequest | None = None) -> int | None:
        """The seed of one sample: the request's base seed (from ``seed`` and the request's
        content, so questions do not share random streams) plus ``sample_index``. Consecutive
        samples have consecutive seeds, as vLLM seeds the children of an ``n > 1`` request
        (``seed + i``), so one request for samples ``a..b`` with seed ``seed_for(a)`` draws
        exactly what ``b - a + 1`` single requests would."""
        if self.seed is None:
            return None
        base = request.seed_base(self.seed) if request is not None else self.seed
        return base + sample_index


def checkpoint_overrides(shipped: dict[str, Any], sampling: SamplingParams) -> str | None:
    """The run-log note of an engine whose model ships sampling defaults (``shipped``: the
    checkpoint's generation_config settings that differ from the library's defaults): what it
    sets and what the request's sampling uses instead; None when it sets none."""
    if not shipped:
        return None
    ours = {**{name: getattr(sampling, name) for name in SamplingOptions.model_fields},
            "do_sample": sampling.temperature > 0,
            "no_repeat_ngram_size": sampling.extra.get("no_repeat_ngram_size", 0)}
    theirs = ", ".join(f"{k}={v!r}" for k, v in sorted(shipped.items()))
    used = ", ".join(f"{k}={ours[k]!r}" for k in sorted(shipped) if k in ours)
    ignored = sorted(k for k in shipped if k not in ours)
    note = f"the checkpoint's generation_config sets {theirs}; this run uses "
    note += used or "the recipe's sampling"
    if ignored:
        note += f" ({', '.join(ignored)} not applied)"
    return note


@dataclass
class ChatRequest:
    """One chat request for ``n`` samples; ``sample_indices`` says which samples they are."""

    messages: list[dict[str, Any]]
    n: int = 1
    sample_indices: list[int] | None = None
    request_id: str = ""
    _seed_bases: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    def indices(self) -> list[int]:
        return list(self.sample_indices) if self.sample_indices is not None else list(range(self.n))

    def seed_base(self, seed: int) -> int:
        """A base seed for this request's samples, from ``seed`` and the messages (images by
        hash): stable across runs, different for different questions. Below 2**30, so base
        plus sample index fits any server's 32-bit seed."""
        base = self._seed_bases.get(seed)
        if base is None:
            digest = hashlib.sha256(canonical_json([seed, self.messages]).encode()).digest()
            base = self._seed_bases[seed] = int.from_bytes(digest[:8], "little") % SEED_SPACE
        return base

    def image_hashes(self) -> list[str]:
        found = []
        for msg in self.messages:
            content = msg.get("content")
            if isinstance(content, list):
                found.extend(p["image"] for p in content if p.get("type") == "image")
        return found


@dataclass
class Completion:
    """One sampled completion, or a failure (``error`` set, nothing else meaningful)."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cached: bool = field(default=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_cache(self) -> dict[str, Any]:
        # not dataclasses.asdict: it deep-copies every field, on the path of every sample
        return {"text": self.text, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}


#: What an engine's worker posts to a call's :class:`ResultMailbox` when the engine closes.
ENGINE_CLOSED = object()


class ResultMailbox:
    """One ``generate`` call of an engine that runs the model in a worker thread (hf, vllm):
    the worker posts each request index whose samples are all done (or
    :data:`ENGINE_CLOSED`); the calling thread waits in :meth:`deliver` and reports each to
    ``on_result`` itself, so cache writes never hold up the model."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.delivered = 0

    def put(self, item: Any) -> None:
        """A finished request's index, or :data:`ENGINE_CLOSED`."""
        self._queue.put(item)

    def deliver(self, results: list[list[Completion]], on_result: OnResult | None,
                closed: Callable[[int], str]) -> None:
        """Wait for every request of the call, calling ``on_result(i, results[i])`` as each is
        posted; raise a DualcurateError with ``closed(requests left)`` if the engine closes.
        ``delivered`` counts what was reported (the caller cancels the rest on the way out)."""
        total = len(results)
        while self.delivered < total:
            item = self._queue.get()
            if item is ENGINE_CLOSED:
                raise DualcurateError(closed(total - self.delivered))
            self.delivered += 1
            if on_result is not None:
                on_result(item, results[item])


class EngineConfig(StageConfig):
    """Common engine options. ``model`` is a hub id or a local directory."""

    model: str
    revision: str | None = None


COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class LocalModelConfig(EngineConfig):
    """Options of engines that load weights in this process (hf, vllm).

    ``trust_remote_code`` runs code shipped with the model, so it is refused unless
    ``revision`` pins a commit (40 hex digits) or the model is a local directory: the code that
    runs can then not change under you."""

    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _remote_code_needs_a_pin(self) -> LocalModelConfig:
        if self.trust_remote_code and not Path(self.model).expanduser().is_dir() and not (
                self.revision and COMMIT_RE.match(self.revision)):
            raise ValueError(
                f"trust_remote_code=true for {self.model!r} needs revision set to a commit "
                f"hash (40 hex digits), so the code that runs cannot change under you; pin "
                f"one, or set trust_remote_code=false")
        return self


class Engine:
    """Base class for generation backends."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "engine"
    Config: ClassVar[type[EngineConfig]] = EngineConfig
    #: True when ``generate`` may be called from several threads at once and keeps the model
    #: fed across calls (one capacity shared by all of them). False: core calls it one call
    #: at a time.
    concurrent_generate: ClassVar[bool] = False

    def __init__(self, config: EngineConfig | dict[str, Any] | None = None, **kwargs: Any):
        self.config = coerce_config(self.Config, config, kwargs)
        self.resolve_image: ImageResolver | None = None

    @classmethod
    def preflight_config(cls, config: EngineConfig) -> list[str]:
        """Problems with running this engine with ``config`` found before anything runs (a
        backend library not installed, say); checked by ``curate validate`` wherever a
        stage names the engine. Each message says what to do."""
        return []

    def capacity(self) -> int:
        """How many samples the engine works on at once (requests in flight to a server,
        sequences in a vLLM batch, rows in an hf batch). The streaming executor keeps up to
        ``depth`` (3 by default) times this many samples handed to the engine, so it never
        runs dry between shards."""
        for option in ("max_concurrency", "max_num_seqs", "batch_size"):
            value = getattr(self.config, option, None)
            if isinstance(value, int) and value > 0:
                return value
        return 1

    def identity(self) -> dict[str, Any]:
        """What, beyond the request, determines the output: part of every cache key. Core adds
        every option of ``Config`` not declared in ``runtime_fields``, the version of the
        engine's code and, for a model loaded in this process (no ``endpoint``), the model's
        content fingerprint (:func:`engine_identity`); engines override this only to add
        what their Config does not hold."""
        return {"model": self.config.model, "revision": self.config.revision, "endpoint": None}

    def setup(self, ctx: StageContext | None = None, resolve_image: ImageResolver | None = None) -> None:
        """Load the model / open the client. Called once per worker."""
        engine_identity(self)  # fingerprint the weights before they are loaded
        if resolve_image is not None:
            self.resolve_image = resolve_image
        elif ctx is not None and ctx.images is not None:
            self.resolve_image = ctx.images.get

    def image_bytes(self, digest: str) -> bytes:
        """The bytes of an image part's hash, from the resolver given at ``setup``."""
        if self.resolve_image is None:
            raise DualcurateError(f"engine {self.name}: a request has an image but no image "
                                  f"store was given; call setup(ctx) with a run context")
        return self.resolve_image(digest)

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        """Answer every request with ``request.n`` completions, aligned with ``requests``.
        Calls ``on_result(i, completions)`` as each request finishes (any order)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model / client."""


def map_image_parts(messages: Sequence[dict[str, Any]],
                    convert: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages with every ``{"type": "image", "image": hash}`` part replaced by
    ``convert(hash)`` (an engine's own image part); everything else is kept as is."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            msg = {**msg, "content": [convert(p["image"]) if p.get("type") == "image" else p
                                      for p in content]}
        out.append(msg)
    return out


def engine_identity(engine: Engine) -> dict[str, Any]:
    """Everything about an engine that can change its outputs, computed once per engine
    instance: its ``identity()``, every Config option not in ``runtime_fields`` (dtype,
    quantization, max_model_len, chat template, llm_kwargs...) under ``options``, the
    version of the engine's code under ``code`` (:func:`~dualcurate.config.code_versions`:
    its distribution's version, with a hash of its source files when installed editable, so
    an engine edited in place or upgraded is not answered from what the old code generated),
    and for a model run in this process (no endpoint) its fingerprint under ``weights``: a
    local folder by the content of its files, a hub id by the commit it resolves to in the
    local cache."""
    memo = engine.__dict__.get("_dualcurate_identity")
    if memo is not None:
        return memo

    ident = dict(engine.identity())
    config = engine.config
    runtime = set(type(config).runtime_fields) | {"model", "revision"}
    ident.setdefault("options", config.model_dump(mode="json", exclude=runtime))
    ident["code"] = code_versions(type(engine))
    model = ident.get("model")
    if model and ident.get("endpoint") is None and "weights" not in ident:
        ident["weights"] = model_fingerprint(str(model), ident.get("revision"))
    engine.__dict__["_dualcurate_identity"] = ident
    return ident


def cache_keys(engine: Engine, request: ChatRequest, sampling: SamplingParams,
               sampling_key: dict[str, Any] | None = None) -> list[str]:
    """The cache key of each sample of ``request`` (``sampling_key``: ``sampling`` dumped to
    JSON once by a caller keying many requests)."""
    ident = engine_identity(engine)
    if sampling_key is None:
        sampling_key = sampling.model_dump(mode="json")
    extra = {k: v for k, v in ident.items() if k not in ("model", "revision", "endpoint")}
    return request_keys(engine=engine.name, model=ident.get("model", ""),
                        revision=ident.get("revision"), endpoint=ident.get("endpoint"),
                        messages=request.messages, image_hashes=request.image_hashes(),
                        sampling=sampling_key, sample_indices=request.indices(), extra=extra)


class GenerationStats:
    """Counts of one stage's (or one shard's) model calls; thread-safe. A shard's stats add
    into the stage's (``parent``) as well."""

    FIELDS = ("requests", "sent", "cached", "failed", "completion_tokens")

    def __init__(self, parent: GenerationStats | None = None) -> None:
        self.parent = parent
        self.requests = self.sent = self.cached = self.failed = self.completion_tokens = 0
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)
        if self.parent is not None:
            self.parent.add(**counts)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.FIELDS}


_LOCKS_GUARD = threading.Lock()


def _serial_lock(engine: Engine) -> threading.Lock:
    """The lock that makes an engine without ``concurrent_generate`` take one call at a time."""
    lock = engine.__dict__.get("_dualcurate_serial")
    if lock is None:
        with _LOCKS_GUARD:
            lock = engine.__dict__.setdefault("_dualcurate_serial", threading.Lock())
    return lock


def generate_cached(engine: Engine, requests: Sequence[ChatRequest], sampling: SamplingParams,
                    cache: RequestCache | None, progress: Any = None,
                    stats: GenerationStats | None = None, window: GenerationWindow | None = None,
                    token: Hashable | None = None) -> list[list[Completion]]:
    """Generate through the request cache: only samples without a cached output are sent,
    each result is committed to the cache as it arrives, failures are recorded (not cached).

    ``window`` (the streaming executor's) counts the samples handed to the engine and
    answered, for the shard ``token``, so the executor knows when to admit the next shard.
    May be called from several threads at once."""
    stats = stats if stats is not None else GenerationStats()
    if progress is not None:
        progress.expect(len(requests))  # progress counts requests on top of the stage's rows
    results: list[list[Completion | None]] = [[None] * len(r.indices()) for r in requests]
    sampling_key = sampling.model_dump(mode="json")
    keys = [cache_keys(engine, r, sampling, sampling_key) for r in requests]
    found = cache.get_many(k for ks in keys for k in ks) if cache is not None else {}

    pending: list[ChatRequest] = []
    where: list[tuple[int, list[int]]] = []  # pending i -> (request index, positions)
    cached = 0
    for ri, (req, ks) in enumerate(zip(requests, keys, strict=True)):
        missing_pos = []
        for pos, key in enumerate(ks):
            hit = found.get(key)
            if hit is not None:
                results[ri][pos] = Completion(**hit, cached=True)
            else:
                missing_pos.append(pos)
        cached += len(ks) - len(missing_pos)
        if missing_pos:
            idx = req.indices()
            pending.append(ChatRequest(messages=req.messages, n=len(missing_pos),
                                       sample_indices=[idx[p] for p in missing_pos],
                                       request_id=req.request_id,
                                       _seed_bases=req._seed_bases))
            where.append((ri, missing_pos))
    stats.add(requests=len(requests), cached=cached)
    if progress is not None:
        progress.advance_requests(len(requests) - len(pending), cached=True)
    to_send = sum(len(p.indices()) for p in pending)
    if window is not None and window.cancelled and pending:
        raise GenerationCancelled(f"stage stopped; {to_send} samples not sent")
    if window is not None:
        window.submitted(token, to_send, engine.capacity() if pending else 0)

    lock = threading.Lock()
    reported: set[int] = set()
    kept: list[set[int]] = [set() for _ in pending]  # positions of each pending request kept

    def on_result(pi: int, completions: list[Completion],
                  positions: Sequence[int] | None = None) -> None:
        """A pending request's answers: all of them, or (``positions``, for engines that
        report samples as they arrive) those samples of it. Each is cached at once."""
        ri, all_positions = where[pi]
        chosen = range(len(all_positions)) if positions is None else positions
        to_cache = []
        failed = tokens = fresh = 0
        with lock:
            if pi in reported:
                return
            for local, comp in zip(chosen, completions, strict=False):
                if local in kept[pi]:
                    continue
                kept[pi].add(local)
                fresh += 1
                pos = all_positions[local]
                results[ri][pos] = comp
                if comp.ok:
                    to_cache.append((keys[ri][pos], comp.to_cache()))
                    tokens += comp.completion_tokens
                else:
                    failed += 1
                    if cache is not None:
                        cache.record_failure(keys[ri][pos], comp.error or "unknown error")
            finished = len(kept[pi]) == len(all_positions)
            if finished:
                reported.add(pi)
        stats.add(sent=fresh, failed=failed, completion_tokens=tokens)
        if cache is not None and to_cache:
            cache.put_many(to_cache)
        if window is not None:
            window.answered(fresh)
        if progress is not None:
            progress.advance_requests(1 if finished else 0, tokens=tokens, errors=failed)

    on_result.accepts_partial = True  # type: ignore[attr-defined]

    if pending:
        try:
            if engine.concurrent_generate:
                returned = engine.generate(pending, sampling, on_result=on_result)
            else:
                with _serial_lock(engine):
                    returned = engine.generate(pending, sampling, on_result=on_result)
            # Engines should report through on_result; accept a plain return value too.
            for pi, completions in enumerate(returned or []):
                if pi not in reported:
                    on_result(pi, completions)
        finally:
            if window is not None:  # what never came back no longer counts as in flight
                with lock:
                    unreported = sum(len(where[pi][1]) - len(kept[pi])
                                     for pi in range(len(pending)))
                window.answered(unreported)
    final: list[list[Completion]] = []
    for ri, row in enumerate(results):
        filled = []
        for pos, comp in enumerate(row):
            if comp is None:  # engine returned fewer than asked: record as a failure
                comp = Completion(error=f"engine {engine.name} returned no sample "
                                        f"{requests[ri].indices()[pos]} for request "
                                        f"{requests[ri].request_id or ri}")
            filled.append(comp)
        final.append(filled)
    return final
