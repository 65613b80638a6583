"""The ``openai`` engine: any OpenAI-compatible chat completions server (vLLM, SGLang,
``transformers serve``, hosted APIs), over aiohttp (``http_client = "aiohttp"``, the default)
or ``AsyncOpenAI`` on the SDK's aiohttp transport (``http_client = "openai-sdk"``); see
:mod:`dualcurate_openai.transport` for why the default is the leaner one.

A question with images gets one HTTP request for its k samples (``n = k``, seed
``sampling.seed_for(first, request)``) where the server supports ``n`` (vLLM, SGLang, OpenAI:
sample ``i`` of such a request is drawn with seed + i, exactly the seed a single request for
sample ``i`` gets), so its images are encoded, serialised and uploaded once, not k times.
Whether the server takes ``n`` is detected on the first ``n > 1`` request: a server that
answers fewer choices, or refuses ``n``, gets one request per sample from then on, and what it
did answer is kept. A text-only question gets one request per sample (``n_per_request =
"auto"``): its prompt costs nothing to resend (the server's prefix cache shares it), and a
request with ``n = k`` holds k of the ``max_concurrency`` slots until its slowest sample is
done, so the server sees fewer samples at work (measured: benchmarks/distill_overhead.py).
``"always"`` / ``"never"`` force either way; the samples are the same.

At most ``max_concurrency`` samples are in flight (a request with ``n = k`` holds k), shared
by every ``generate`` call in flight (the streaming executor runs several shards at once): a
pool of workers takes the next request as soon as the samples it needs are free, so the
server always has ``max_concurrency`` to work on. The event loop runs in a background thread
started by ``setup``; ``generate`` is synchronous and calls ``on_result`` as each request's
samples are all in.

``batch = true`` sends the same jobs through OpenAI's Batch API instead (half the price, up
to ``batch_completion_window`` to answer): see :mod:`dualcurate_openai.batch`. The request
bodies, jobs, answers and errors of both modes are :mod:`dualcurate_openai.wire`'s.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from dualcurate.chat import ChatRequest, Completion, OnResult
from dualcurate.engine import Engine, EngineConfig
from dualcurate.errors import DualcurateError
from dualcurate.sampling import SamplingParams
from dualcurate.store import image_mime as store_image_mime
from dualcurate_openai.batch import BatchRunner
from dualcurate_openai.retry import backoff_delay, is_retryable_status, parse_retry_after
from dualcurate_openai.transport import (
    TRANSPORTS,
    ConnectError,
    HTTPStatusError,
    RequestTimeout,
)
from dualcurate_openai.wire import OPENAI_API, Call, Job, Reporter, Wire

if TYPE_CHECKING:
    from dualcurate.chat import ImageResolver
    from dualcurate.context import StageContext

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OpenAIEngineConfig(EngineConfig):
    """``model`` as the server names it; ``base_url`` of the server (None: $OPENAI_BASE_URL
    or the OpenAI API); the API key is read from the environment variable ``api_key_env``
    (may be unset for local servers) and is never stored anywhere."""

    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = Field(64, ge=1)
    timeout: float = Field(600.0, gt=0)
    max_retries: int = Field(6, ge=0)
    backoff_initial: float = Field(1.0, ge=0)
    backoff_max: float = Field(60.0, ge=0)
    token_limit_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    #: How the sampling settings the OpenAI schema lacks (top_k, min_p, repetition_penalty)
    #: reach the server, so its generation-config defaults never apply in their place:
    #: "vllm" as top-level fields (vLLM, SGLang, LMDeploy, llama.cpp), "transformers" in
    #: the ``generation_config`` JSON (``transformers serve``), "openai" not at all (hosted
    #: APIs; a request that sets them is refused, since the server would not apply them).
    sampling_dialect: Literal["vllm", "transformers", "openai"] = "vllm"
    http_client: Literal["aiohttp", "openai-sdk"] = "aiohttp"
    n_per_request: Literal["auto", "always", "never"] = "auto"
    #: Batch API mode (:mod:`dualcurate_openai.batch`): jobs go into batches of at most
    #: ``batch_max_requests`` lines and ``batch_max_bytes`` bytes, gathered for
    #: ``batch_linger`` seconds, polled every ``batch_poll_interval`` seconds.
    batch: bool = False
    batch_max_requests: int = Field(50_000, ge=1)
    batch_max_bytes: int = Field(190 * 1024 * 1024, ge=1024)
    batch_linger: float = Field(5.0, ge=0)
    batch_poll_interval: float = Field(30.0, gt=0)
    batch_completion_window: str = "24h"

    runtime_fields: ClassVar[frozenset[str]] = frozenset(
        {"api_key_env", "max_concurrency", "timeout", "max_retries", "backoff_initial",
         "backoff_max", "http_client", "n_per_request", "batch", "batch_max_requests",
         "batch_max_bytes", "batch_linger", "batch_poll_interval", "batch_completion_window"})

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, value: str) -> str:
        # Never echo the value: a key pasted here by mistake must not reach logs or errors.
        if not _ENV_NAME.match(value) or len(value) > 64:
            raise ValueError("must be the NAME of an environment variable (letters, digits, "
                             "underscores), not the key itself: export the key, e.g. "
                             "OPENAI_API_KEY=..., and give that name")
        return value


def image_mime(data: bytes) -> str:
    """The MIME type of image bytes by their magic number (PNG when unknown)."""
    return store_image_mime(data, default="image/png")


class SampleSlots:
    """At most ``capacity`` samples in flight, taken by requests of several samples at once,
    first come first served (a request for k never starves behind requests for 1, and two
    requests never deadlock on half of what each needs). Use inside one event loop."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.free = capacity
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, n: int) -> None:
        if not self._waiters and self.free >= n:
            self.free -= n
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(n)  # granted as we were cancelled: give it back
            else:
                self._waiters.remove((n, future))
                self._wake()
            raise

    def release(self, n: int) -> None:
        self.free += n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.free:
            n, future = self._waiters.popleft()
            if future.cancelled():
                continue
            self.free -= n
            future.set_result(None)


class OpenAIEngine(Engine):
    """Generates through an OpenAI-compatible server; retries 429/408/409/5xx, timeouts and
    connection errors with backoff (honouring Retry-After), never other 4xx."""

    name = "openai"
    Config = OpenAIEngineConfig
    config: OpenAIEngineConfig
    #: generate() may be called from several threads at once; max_concurrency holds across
    #: them, so a distiller can prepare the next requests while earlier ones are in flight.
    concurrent_generate: ClassVar[bool] = True

    def __init__(self, config: OpenAIEngineConfig | dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._transport: Any = None
        self._slots: SampleSlots | None = None
        #: the request bodies, and whether the server takes n (shared with batch mode)
        self.wire = Wire(self.config, self.image_bytes)
        self.reporter = Reporter()
        self._batch: BatchRunner | None = None
        self._batch_dir: Path | None = None

    def capacity(self) -> int:
        # batch mode: hand the engine many shards' requests, so a batch gathers them all
        return self.config.batch_max_requests if self.config.batch else self.config.max_concurrency

    def base_url(self) -> str:
        return self.wire.endpoint()

    def identity(self) -> dict[str, Any]:
        return {"model": self.config.model, "revision": self.config.revision,
                "endpoint": self.base_url()}

    # lifecycle ------------------------------------------------------------------------------
    def setup(self, ctx: StageContext | None = None, resolve_image: ImageResolver | None = None) -> None:
        super().setup(ctx, resolve_image)
        if ctx is not None and self._batch_dir is None:
            # batch records live in the run store (they survive a stage being redone)
            root = ctx.store.root if ctx.store is not None else ctx.workdir
            self._batch_dir = Path(root) / "batches"
        if self._loop is not None:
            return
        key = os.environ.get(self.config.api_key_env) or None
        if key is None and self.base_url() == OPENAI_API:
            raise DualcurateError(
                f"engine openai: environment variable {self.config.api_key_env} is not set and "
                f"base_url is the OpenAI API; export the key in {self.config.api_key_env}, or "
                f"set api_key_env to the variable holding it, or point base_url at your server")
        self.wire.api_key = key
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="dualcurate-openai")
        self._thread.start()
        self._transport = asyncio.run_coroutine_threadsafe(
            self._make_transport(), self._loop).result()
        self.reporter.start()
        if self.config.batch:
            folder = self._batch_dir or Path(tempfile.mkdtemp(prefix="dualcurate-batches-"))
            self._batch = BatchRunner(self.wire, self.reporter, folder,
                                      ctx.log if ctx is not None else None)
            asyncio.run_coroutine_threadsafe(self._batch.start(), self._loop).result()

    async def _make_transport(self) -> Any:
        # One limit for every generate() call in flight (shards in flight share the engine).
        self._slots = SampleSlots(self.config.max_concurrency)
        cls = TRANSPORTS[self.config.http_client]
        return cls(self.base_url(), self.wire.api_key, self.config.timeout,
                   self.config.max_concurrency + 8)

    def close(self) -> None:
        if self._loop is None:
            return
        loop, thread = self._loop, self._thread
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
        except Exception:  # closing must not mask the error that got us here
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()
        self.reporter.stop()
        self._loop = self._thread = self._transport = self._batch = None
        self.wire.forget_images()

    async def _shutdown(self) -> None:
        """Cancel requests still in flight (their generate() calls raise CancelledError),
        then close the connections."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._batch is not None:
            await self._batch.close()
        if self._transport is not None:
            await self._transport.close()

    # generation -----------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        if self._loop is None:
            self.setup()
        assert self._loop is not None
        call = Call(on_result)
        work = self._batch.generate if self._batch is not None else self._generate
        future = asyncio.run_coroutine_threadsafe(work(list(requests), sampling, call),
                                                  self._loop)
        try:
            results = future.result()
        except BaseException:
            # Interrupted (Ctrl-C) or failed: stop the requests still in flight; what finished
            # was reported through on_result (and cached by the caller).
            future.cancel()
            raise
        call.drained.wait()
        if call.error is not None:
            raise call.error
        return results

    async def _generate(self, requests: list[ChatRequest], sampling: SamplingParams,
                        call: Call) -> list[list[Completion]]:
        results: list[list[Completion]] = [[Completion()] * len(r.indices()) for r in requests]
        remaining = [len(r.indices()) for r in requests]
        converted: dict[int, list[dict[str, Any]]] = {}
        wire = self.wire
        jobs = (job for ri, r in enumerate(requests) for job in wire.jobs(ri, r))
        again: deque[Job] = deque()  # samples a server without n support did not answer
        base = wire.base_kwargs(sampling)
        slots = self._slots
        assert slots is not None
        loop = asyncio.get_running_loop()

        def next_job() -> Job | None:
            return again.popleft() if again else next(jobs, None)

        async def worker() -> None:
            while (job := next_job()) is not None:  # a free worker takes the next job
                if call.error is not None:  # the caller cannot take results: stop sending
                    return
                ri = job.ri
                messages = converted.get(ri)
                if messages is None:  # images encoded once per question
                    messages = converted[ri] = wire.convert(requests[ri].messages)
                await slots.acquire(job.count)
                try:
                    answered = await self._complete(
                        messages, base, sampling.seed_for(job.first, requests[ri]), job.count)
                except BaseException:
                    slots.release(job.count)
                    raise
                answered, rest = wire.settle(job, answered)  # n ignored: the rest singly
                again.extend(rest)
                for i, completion in enumerate(answered):
                    results[ri][job.pos + i] = completion
                remaining[ri] -= len(answered)
                done = remaining[ri] == 0
                if done:
                    del converted[ri]
                # A job's slots are held until the reporter has handed its answers on (to
                # the request cache): at any moment at most max_concurrency samples are sent
                # and not yet kept, so a kill re-sends at most that many.
                release = partial(loop.call_soon_threadsafe, slots.release, job.count)
                if call.on_result is None:
                    slots.release(job.count)
                elif call.partial:  # each answer is kept as it arrives
                    self.reporter.report(call, ri, answered,
                                         list(range(job.pos, job.pos + len(answered))), release)
                elif done:
                    self.reporter.report(call, ri, results[ri], release=release)
                else:
                    slots.release(job.count)

        total = sum(remaining)
        try:
            if total:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(self.config.max_concurrency, total)):
                        group.create_task(worker())
        finally:
            self.reporter.drained(call)  # drained once all before it is
        return results

    async def _complete(self, messages: list[dict[str, Any]], base: dict[str, Any],
                        seed: int | None, n: int = 1) -> list[Completion]:
        """``n`` samples of one request (fewer when the server ignores ``n``); a failure is
        ``n`` error completions. A server that refuses ``n`` (400) is asked again singly."""
        wire = self.wire
        body = wire.body(messages, base, seed, n)
        cfg = self.config
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                return wire.completions(await self._transport.post(body), n)
            except HTTPStatusError as exc:
                if wire.refuses_n(n, exc.status):
                    wire.n_supported = False  # refuses n: the first sample alone, then singly
                    body.pop("n")
                    n = 1
                    continue
                if not is_retryable_status(exc.status):
                    return [Completion(error=wire.error(str(exc), attempt))] * n
                retry_after = parse_retry_after(exc.headers)
                error = str(exc)
            except RequestTimeout:
                error = f"timed out after {cfg.timeout:g} s"
            except ConnectError as exc:
                error = f"connection error: {exc}"
            except (ValueError, KeyError, TypeError) as exc:  # an answer that is not JSON
                return [Completion(error=wire.error(f"{type(exc).__name__}: {exc}", attempt))] * n
            if attempt >= cfg.max_retries:
                return [Completion(error=wire.error(error, attempt))] * n
            await asyncio.sleep(backoff_delay(attempt, retry_after, cfg.backoff_initial,
                                              cfg.backoff_max))
            attempt += 1
