"""The Engine interface (hf, vllm, openai implement it) and the cached generation path.

Requests are OpenAI-style chat messages; an image is a content part
``{"type": "image", "image": "<sha256 of the bytes in the run's image store>"}``, so a request
is small, hashable and never carries re-encoded pixels. Engines resolve hashes to bytes through
the resolver given at ``setup``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from dualcurate.cache import RequestCache, request_key
from dualcurate.stages import StageConfig

if TYPE_CHECKING:
    from dualcurate.context import StageContext

ImageResolver = Callable[[str], bytes]
OnResult = Callable[[int, list["Completion"]], None]


class SamplingParams(BaseModel):
    """Sampling settings; all of them are part of the cache key."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None
    stop: list[str] | None = None
    extra: dict[str, Any] = {}

    def seed_for(self, sample_index: int) -> int | None:
        """Per-sample seed: k samples with a fixed seed differ from one another but are
        reproducible."""
        return None if self.seed is None else self.seed + 7919 * sample_index


@dataclass
class ChatRequest:
    """One chat request for ``n`` samples; ``sample_indices`` says which samples they are."""

    messages: list[dict[str, Any]]
    n: int = 1
    sample_indices: list[int] | None = None
    request_id: str = ""

    def indices(self) -> list[int]:
        return list(self.sample_indices) if self.sample_indices is not None else list(range(self.n))

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
        data = asdict(self)
        data.pop("cached")
        data.pop("error")
        return data


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
    Config: ClassVar[type[EngineConfig]] = EngineConfig

    def __init__(self, config: EngineConfig | dict[str, Any] | None = None, **kwargs: Any):
        if config is None:
            config = self.Config(**kwargs)
        elif isinstance(config, dict):
            config = self.Config(**{**config, **kwargs})
        self.config = config
        self.resolve_image: ImageResolver | None = None

    def identity(self) -> dict[str, Any]:
        """What, beyond the request, determines the output: part of every cache key."""
        return {"model": self.config.model, "revision": self.config.revision, "endpoint": None}

    def setup(self, ctx: StageContext | None = None, resolve_image: ImageResolver | None = None) -> None:
        """Load the model / open the client. Called once per worker."""
        if resolve_image is not None:
            self.resolve_image = resolve_image
        elif ctx is not None and ctx.images is not None:
            self.resolve_image = ctx.images.get

    def image_bytes(self, digest: str) -> bytes:
        """The bytes of an image part's hash, from the resolver given at ``setup``."""
        if self.resolve_image is None:
            from dualcurate.errors import DualcurateError

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


def cache_keys(engine: Engine, request: ChatRequest, sampling: SamplingParams) -> list[str]:
    ident = engine.identity()
    sampling_key = sampling.model_dump(mode="json")
    return [
        request_key(engine=engine.name, model=ident.get("model", ""),
                    revision=ident.get("revision"), endpoint=ident.get("endpoint"),
                    messages=request.messages, image_hashes=request.image_hashes(),
                    sampling=sampling_key, sample_index=idx,
                    extra={k: v for k, v in ident.items()
                           if k not in ("model", "revision", "endpoint")})
        for idx in request.indices()
    ]


@dataclass
class GenerationStats:
    requests: int = 0
    sent: int = 0
    cached: int = 0
    failed: int = 0
    completion_tokens: int = 0


def generate_cached(engine: Engine, requests: Sequence[ChatRequest], sampling: SamplingParams,
                    cache: RequestCache | None, progress: Any = None,
                    stats: GenerationStats | None = None) -> list[list[Completion]]:
    """Generate through the request cache: only samples without a cached output are sent,
    each result is committed to the cache as it arrives, failures are recorded (not cached)."""
    stats = stats if stats is not None else GenerationStats()
    if progress is not None:
        progress.expect(len(requests))  # progress counts requests on top of the stage's rows
    results: list[list[Completion | None]] = [[None] * len(r.indices()) for r in requests]
    keys = [cache_keys(engine, r, sampling) for r in requests]
    found = cache.get_many(k for ks in keys for k in ks) if cache is not None else {}

    pending: list[ChatRequest] = []
    where: list[tuple[int, list[int]]] = []  # pending i -> (request index, positions)
    for ri, (req, ks) in enumerate(zip(requests, keys, strict=True)):
        missing_pos = []
        for pos, key in enumerate(ks):
            hit = found.get(key)
            if hit is not None:
                results[ri][pos] = Completion(**hit, cached=True)
            else:
                missing_pos.append(pos)
        stats.requests += 1
        stats.cached += len(ks) - len(missing_pos)
        if missing_pos:
            idx = req.indices()
            pending.append(ChatRequest(messages=req.messages, n=len(missing_pos),
                                       sample_indices=[idx[p] for p in missing_pos],
                                       request_id=req.request_id))
            where.append((ri, missing_pos))
    if progress is not None:
        progress.advance(len(requests) - len(pending), cached=True)

    lock = threading.Lock()
    reported: set[int] = set()

    def on_result(pi: int, completions: list[Completion]) -> None:
        ri, positions = where[pi]
        to_cache = []
        with lock:
            if pi in reported:
                return
            reported.add(pi)
            for pos, comp in zip(positions, completions, strict=False):
                results[ri][pos] = comp
                if comp.ok:
                    to_cache.append((keys[ri][pos], comp.to_cache()))
                    stats.completion_tokens += comp.completion_tokens
                else:
                    stats.failed += 1
                    if cache is not None:
                        cache.record_failure(keys[ri][pos], comp.error or "unknown error")
            stats.sent += len(positions)
        if cache is not None and to_cache:
            cache.put_many(to_cache)
        if progress is not None:
            progress.advance(1, tokens=sum(c.completion_tokens for c in completions),
                             errors=sum(1 for c in completions if not c.ok))

    if pending:
        returned = engine.generate(pending, sampling, on_result=on_result)
        # Engines should report through on_result; accept a plain return value too.
        for pi, completions in enumerate(returned or []):
            if pi not in reported:
                on_result(pi, completions)
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
