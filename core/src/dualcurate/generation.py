"""Generating through the request cache: each sample's cache key (:func:`cache_keys`), the
counts of a stage's model calls (:class:`GenerationStats`) and :func:`generate_cached`, which
answers what the cache holds, sends an engine only the rest and caches each answer as it
arrives. Stages reach it through ``ctx.generate``.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from dualcurate.cache import RequestCache, request_keys
from dualcurate.chat import ChatRequest, Completion
from dualcurate.engine import engine_identity
from dualcurate.window import GenerationCancelled, GenerationWindow

if TYPE_CHECKING:
    from dualcurate.engine import Engine
    from dualcurate.sampling import SamplingParams


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
