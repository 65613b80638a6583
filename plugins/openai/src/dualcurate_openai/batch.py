"""Batch mode of the ``openai`` engine (``batch = true``): OpenAI's Batch API, at half the
price of online requests, through the same request cache.

``generate`` (called from several shard threads at once) turns its requests into the same
HTTP jobs as the online path (``n = k`` for questions with images, one per sample for text;
seeds ``sampling.seed_for(first, request)``) and waits. Each job has a deterministic
``custom_id``: a hash of the endpoint, the messages with their image hashes (never the data
URLs), the sampling body, the seed and ``n``. A collector gathers the jobs of every call for
``batch_linger`` seconds (or until ``batch_max_requests`` are queued), writes the JSONL input
(one ``POST /v1/chat/completions`` line per job), uploads it (``/v1/files``, purpose
``batch``), creates the batch (``/v1/batches``) and polls it every ``batch_poll_interval``
seconds. When it ends, its output and error files are downloaded into the run store and each
job is resolved: a request's ``on_result`` is called as soon as its samples are all in, so
answers enter the request cache as they arrive. Expired, cancelled or failed batches, and
lines that failed with 429/408/409/5xx, go into a new batch (up to ``max_retries`` times);
other failures become error completions (recorded, never cached, sent again next run).

Every step is recorded durably in ``<run>/batches/openai.jsonl`` (append-only, fsynced):
``uploaded`` (input file id and custom ids, before the batch is created), ``submitted``
(batch id) and ``final`` (status, where the downloaded results lie). After a crash, or in a
new ``curate run``, a job whose custom id a recorded batch holds attaches to that batch:
polled if still running, answered from the downloaded results if it finished, looked up by
its input file (``GET /v1/batches``) if the process died between uploading and recording the
batch. Nothing is paid for twice; the API key is never written anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualcurate.chat import ChatRequest, Completion
from dualcurate.fingerprint import canonical_json
from dualcurate.sampling import SamplingParams
from dualcurate_openai.retry import backoff_delay, is_retryable_status, parse_retry_after
from dualcurate_openai.transport import (
    ConnectError,
    HTTPStatusError,
    RequestTimeout,
    TransportError,
    env_proxy,
    error_message,
)
from dualcurate_openai.wire import Call, Job, Reporter, Wire

log = logging.getLogger("dualcurate.openai.batch")

#: The URL every line of an input file posts to, and the batch's endpoint.
BATCH_ENDPOINT = "/v1/chat/completions"
RECORDS = "openai.jsonl"
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: Error codes of a line (no response) worth sending again in a new batch.
RETRYABLE_CODES = frozenset({"batch_expired", "batch_cancelled", "rate_limit_exceeded",
                             "server_error", "timeout"})
_PROBE = 0.02  # seconds between checks of the queue while lingering
#: One lock per records file for every engine in this process (a caption engine and a
#: teacher may share a run): each event is one write, never interleaved.
_APPEND_LOCKS: dict[Path, threading.Lock] = {}
_APPEND_GUARD = threading.Lock()


def custom_id(endpoint: str, messages: list[dict[str, Any]], base: dict[str, Any],
              seed: int | None, n: int) -> str:
    """The deterministic id of one batch line: the same job always has the same id, in this
    run and the next (messages carry image hashes, never data URLs)."""
    digest = hashlib.sha256(canonical_json(
        {"endpoint": endpoint, "messages": messages, "body": base, "seed": seed, "n": n}
    ).encode()).hexdigest()
    return f"dc-{digest[:40]}"


class BatchClient:
    """The Files and Batches endpoints over aiohttp (whatever ``http_client`` says: the
    batch calls are few). Raises the transport's errors."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float):
        import aiohttp

        self.base_url = base_url.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.proxy = env_proxy(self.base_url)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def _request(self, method: str, path: str, *, raw: bool = False, **kwargs: Any) -> Any:
        import aiohttp

        try:
            async with self.session.request(method, f"{self.base_url}{path}",
                                            headers=self.headers, proxy=self.proxy,
                                            **kwargs) as response:
                if response.status >= 400:
                    text = await response.text(errors="replace")
                    raise HTTPStatusError(response.status, error_message(text), response.headers)
                if raw:
                    return await response.read()
                return await response.json(content_type=None)
        except TimeoutError as exc:
            raise RequestTimeout(str(exc) or "timed out") from exc
        except aiohttp.ClientError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc

    async def upload(self, path: Path) -> str:
        import aiohttp

        with open(path, "rb") as handle:
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", handle, filename=path.name,
                           content_type="application/jsonl")
            answer = await self._request("POST", "/files", data=form)
        return str(answer["id"])

    async def create(self, file_id: str, window: str) -> dict[str, Any]:
        return await self._request("POST", "/batches", json={
            "input_file_id": file_id, "endpoint": BATCH_ENDPOINT, "completion_window": window,
            "metadata": {"client": "dualcurate"}})

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/batches/{batch_id}")

    async def list(self, after: str | None = None) -> dict[str, Any]:
        params = {"limit": "100", **({"after": after} if after else {})}
        return await self._request("GET", "/batches", params=params)

    async def content(self, file_id: str) -> bytes:
        return await self._request("GET", f"/files/{file_id}/content", raw=True)

    async def close(self) -> None:
        await self.session.close()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class BatchRecords:
    """The durable record of batches: an append-only JSON Lines file of events, fsynced line
    by line, and the downloaded result files next to it. A torn last line (a kill while
    writing) is skipped."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / RECORDS
        self.uploads: dict[str, list[str]] = {}      # input file id -> custom ids
        self.batches: dict[str, dict[str, Any]] = {}  # batch id -> file, custom_ids, final...
        self.owner: dict[str, tuple[str, str]] = {}   # custom id -> ("file"|"batch", id)
        self._index: dict[str, dict[str, tuple[Path, int]]] = {}
        with _APPEND_GUARD:
            self._lock = _APPEND_LOCKS.setdefault(self.path.resolve(), threading.Lock())
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):  # torn by a kill: the next event starts clean
                with open(self.path, "r+b") as handle:
                    handle.truncate(data.rfind(b"\n") + 1)
                    os.fsync(handle.fileno())
            for line in data.decode("utf-8", errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "uploaded":
            ids = list(event.get("custom_ids") or [])
            self.uploads[event["file"]] = ids
            for cid in ids:
                self.owner[cid] = ("file", event["file"])
        elif kind == "submitted":
            ids = self.uploads.get(event["file"], [])
            self.batches[event["batch"]] = {"file": event["file"], "custom_ids": ids,
                                            "final": None}
            for cid in ids:
                self.owner[cid] = ("batch", event["batch"])
        elif kind == "final" and event.get("batch") in self.batches:
            self.batches[event["batch"]]["final"] = event

    def append(self, event: dict[str, Any]) -> None:
        event = {"time": round(time.time(), 3), **event}
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            self._apply(event)

    def save(self, name: str, data: bytes) -> str:
        """Write a downloaded result file atomically; returns its name in the folder."""
        path = self.folder / name
        tmp = path.with_name(f".tmp-{name}-{os.getpid()}")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.folder)
        return name

    def result_files(self, batch_id: str) -> list[Path]:
        final = self.batches[batch_id]["final"] or {}
        return [self.folder / final[k] for k in ("output", "errors")
                if final.get(k) and (self.folder / final[k]).exists()]

    def lines(self, batch_id: str) -> list[dict[str, Any]]:
        """Every result line of a finished batch (output file, then error file)."""
        out = []
        for path in self.result_files(batch_id):
            for raw in path.read_bytes().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(raw)
                    if isinstance(entry, dict) and entry.get("custom_id"):
                        out.append(entry)
        return out

    def result(self, batch_id: str, cid: str) -> dict[str, Any] | None:
        """The result line of ``cid`` in a finished batch, through an index of offsets built
        once per batch (results are read back one by one, not held in memory)."""
        index = self._index.get(batch_id)
        if index is None:
            index = {}
            for path in self.result_files(batch_id):
                offset = 0
                with open(path, "rb") as handle:
                    for raw in handle:
                        with contextlib.suppress(ValueError):
                            entry = json.loads(raw)
                            if isinstance(entry, dict) and entry.get("custom_id"):
                                # an output line wins over an error line for the same id
                                index.setdefault(entry["custom_id"], (path, offset))
                        offset += len(raw)
            self._index[batch_id] = index
        where = index.get(cid)
        if where is None:
            return None
        with open(where[0], "rb") as handle:
            handle.seek(where[1])
            return json.loads(handle.readline())


@dataclass
class _Pending:
    """One batch line (a job), shared by every generate() call that asked for it."""

    cid: str
    messages: list[dict[str, Any]]
    base: dict[str, Any]
    seed: int | None
    n: int
    futures: list[asyncio.Future[list[Completion] | None]] = field(default_factory=list)
    attempts: int = 0
    batch: str | None = None  # the batch (or input file, while looked up) it waits on
    last_error: str = ""

    def live(self) -> bool:
        return any(not f.done() for f in self.futures)

    def settle(self, value: list[Completion] | None) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(value)


class BatchRunner:
    """Batch mode of one ``openai`` engine, given its :class:`Wire` (request bodies, what the
    server takes) and :class:`Reporter`; lives on the engine's event loop (every method but
    :meth:`generate`'s caller runs there, so no locks)."""

    def __init__(self, wire: Wire, reporter: Reporter, folder: Path,
                 logger: logging.Logger | None = None):
        self.wire = wire
        self.reporter = reporter
        self.config = wire.config
        self.folder = folder
        self.log = logger or log
        self.records = BatchRecords(folder)
        self.client: BatchClient | None = None
        self.pending: dict[str, _Pending] = {}
        self.queue: dict[str, _Pending] = {}  # waiting for the next batch, in order
        self.queued_at = 0.0
        self.tasks: dict[str, asyncio.Task[None]] = {}  # poll/look-up task per batch or file
        self.collector: asyncio.Task[None] | None = None
        self.wake: asyncio.Event | None = None
        self.endpoint = wire.endpoint()

    async def start(self) -> None:
        self.client = BatchClient(self.endpoint, self.wire.api_key, self.config.timeout)
        self.wake = asyncio.Event()
        self.collector = asyncio.get_running_loop().create_task(self._collect())

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    # the generate() side ----------------------------------------------------------------
    async def generate(self, requests: list[ChatRequest], sampling: SamplingParams,
                       call: Call) -> list[list[Completion]]:
        wire = self.wire
        results: list[list[Completion]] = [[Completion()] * len(r.indices()) for r in requests]
        remaining = [len(r.indices()) for r in requests]
        base = wire.base_kwargs(sampling)
        done: asyncio.Queue[tuple[Job, asyncio.Future[Any]]] = asyncio.Queue()
        waiting: set[asyncio.Future[Any]] = set()

        def send(job: Job) -> None:
            request = requests[job.ri]
            future = self.submit(request.messages, base,
                                 sampling.seed_for(job.first, request), job.count)
            waiting.add(future)
            future.add_done_callback(lambda f, job=job: done.put_nowait((job, f)))

        try:
            for ri, request in enumerate(requests):
                for job in wire.jobs(ri, request):
                    send(job)
            while waiting:
                job, future = await done.get()
                waiting.discard(future)
                if future.cancelled():
                    continue
                answered = future.result()
                ri = job.ri
                if answered is None:  # the server refused n: every sample singly
                    wire.n_supported = False
                    for single in job.singles():
                        send(single)
                    continue
                answered, rest = wire.settle(job, answered)  # n ignored: the rest singly
                for single in rest:
                    send(single)
                for i, completion in enumerate(answered):
                    results[ri][job.pos + i] = completion
                remaining[ri] -= len(answered)
                if remaining[ri] == 0 and call.on_result is not None:
                    self.reporter.report(call, ri, results[ri])
                if call.error is not None:  # the caller cannot take results: stop waiting
                    break
        finally:
            for future in waiting:
                future.cancel()
            self.reporter.drained(call)
        return results

    def submit(self, messages: list[dict[str, Any]], base: dict[str, Any], seed: int | None,
               n: int) -> asyncio.Future[list[Completion] | None]:
        """A future for one job's completions (None: send its samples singly): joins the
        job already waiting under the same custom id, or a recorded batch holding it, or the
        queue for the next batch."""
        cid = custom_id(self.endpoint, messages, base, seed, n)
        future: asyncio.Future[list[Completion] | None] = \
            asyncio.get_running_loop().create_future()
        pending = self.pending.get(cid)
        if pending is not None and pending.live():
            pending.futures.append(future)
            return future
        pending = self.pending[cid] = _Pending(cid, messages, base, seed, n, [future])
        owner = self.records.owner.get(cid)
        if owner is None:
            self._enqueue(pending)
        elif owner[0] == "file":
            pending.batch = owner[1]
            self._watch(owner[1], self._find_batch(owner[1]))
        else:
            bid = owner[1]
            final = self.records.batches[bid]["final"]
            if final is None:
                pending.batch = bid
                self._watch(bid, self._poll(bid, at_once=True))
            else:  # finished earlier (this run or one before): its answer is on disk
                self._resolve(pending, bid, final, fresh=True)
        return future

    def _enqueue(self, pending: _Pending) -> None:
        pending.batch = None
        if not self.queue:
            self.queued_at = time.monotonic()
        self.queue[pending.cid] = pending
        assert self.wake is not None
        self.wake.set()

    def _watch(self, key: str, coro: Any) -> None:
        if key in self.tasks:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks[key] = task

        def forget(done: asyncio.Task[None], key: str = key) -> None:
            if self.tasks.get(key) is done:
                del self.tasks[key]

        task.add_done_callback(forget)

    def _drop(self, pending: _Pending) -> None:
        """Forget a job that is answered (a newer job under the same id stays)."""
        if self.pending.get(pending.cid) is pending:
            del self.pending[pending.cid]

    # submitting ---------------------------------------------------------------------------
    async def _collect(self) -> None:
        """Linger until ``batch_max_requests`` are queued or ``batch_linger`` passed since
        the oldest, then submit a batch; repeat."""
        assert self.wake is not None
        cfg = self.config
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                while (len(self.queue) < cfg.batch_max_requests
                       and time.monotonic() - self.queued_at < cfg.batch_linger):
                    await asyncio.sleep(min(_PROBE, cfg.batch_linger))
                taken: list[_Pending] = []
                for cid in list(self.queue):
                    pending = self.queue.pop(cid)
                    if pending.live():
                        taken.append(pending)
                    else:  # every caller went away before it was sent
                        self._drop(pending)
                    if len(taken) >= cfg.batch_max_requests:
                        break
                self.queued_at = time.monotonic()
                if taken:
                    try:
                        await self._submit(taken)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # never let the collector die
                        self._fail_all(taken, f"batch submission failed: "
                                              f"{type(exc).__name__}: {exc}")

    def _write_input(self, taken: list[_Pending], path: Path) -> tuple[list[_Pending],
                                                                        list[_Pending],
                                                                        list[tuple[_Pending, str]]]:
        """The JSONL input file (in a worker thread: images are read and encoded here).
        Returns the jobs written, those left for the next batch (size limit) and those whose
        body could not be built."""
        written: list[_Pending] = []
        broken: list[tuple[_Pending, str]] = []
        size = 0
        with open(path, "wb") as handle:
            for i, pending in enumerate(taken):
                try:
                    messages = self.wire.convert(pending.messages)
                except Exception as exc:  # an image missing from the store, say
                    broken.append((pending, f"{type(exc).__name__}: {exc}"))
                    continue
                body = self.wire.body(messages, pending.base, pending.seed, pending.n)
                line = (json.dumps({"custom_id": pending.cid, "method": "POST",
                                    "url": BATCH_ENDPOINT, "body": body},
                                   separators=(",", ":")) + "\n").encode()
                if written and size + len(line) > self.config.batch_max_bytes:
                    return written, taken[i:], broken
                handle.write(line)
                size += len(line)
                written.append(pending)
            handle.flush()
            os.fsync(handle.fileno())
        return written, [], broken

    async def _submit(self, taken: list[_Pending]) -> None:
        client = self.client
        assert client is not None
        path = self.folder / f".tmp-input-{time.time_ns()}-{os.getpid()}.jsonl"
        try:
            written, left, broken = await asyncio.to_thread(self._write_input, taken, path)
            for pending, error in broken:
                self._fail(pending, error)
            if left:  # over the size limit: first in the next batch
                self.queue = {**{p.cid: p for p in left}, **self.queue}
                self.queued_at = 0.0
            if not written:
                return
            try:
                file_id = await self._call(client.upload, path)
            except TransportError as exc:
                self._fail_all(written, f"uploading the batch input failed: {exc}")
                return
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        ids = [p.cid for p in written]
        # recorded before the batch exists: a kill between the two is found again by file
        self.records.append({"event": "uploaded", "file": file_id, "endpoint": self.endpoint,
                             "model": self.config.model, "custom_ids": ids})
        for pending in written:
            pending.attempts += 1
        try:
            batch = await self._call(client.create, file_id, self.config.batch_completion_window)
        except TransportError as exc:
            self._fail_all(written, f"creating the batch failed: {exc}")
            return
        bid = str(batch["id"])
        self.records.append({"event": "submitted", "batch": bid, "file": file_id})
        self.log.info("openai batch %s: %d requests submitted (input file %s)", bid, len(ids),
                      file_id)
        for pending in written:
            pending.batch = bid
        self._watch(bid, self._poll(bid))

    async def _call(self, fn: Any, *args: Any) -> Any:
        """One Files/Batches call, retried like a chat request (429/408/409/5xx, timeouts,
        connection errors) with backoff."""
        cfg = self.config
        attempt = 0
        while True:
            retry_after = None
            try:
                return await fn(*args)
            except HTTPStatusError as exc:
                if not is_retryable_status(exc.status) or attempt >= cfg.max_retries:
                    raise
                retry_after = parse_retry_after(exc.headers)
            except (RequestTimeout, ConnectError):
                if attempt >= cfg.max_retries:
                    raise
            await asyncio.sleep(backoff_delay(attempt, retry_after, cfg.backoff_initial,
                                              cfg.backoff_max))
            attempt += 1

    # waiting --------------------------------------------------------------------------------
    async def _find_batch(self, file_id: str) -> None:
        """An input file uploaded by a run that died before it recorded the batch: find the
        batch created from it, or send its jobs again."""
        client = self.client
        assert client is not None
        after = None
        found = None
        try:
            for _ in range(50):
                page = await self._call(client.list, after)
                data = page.get("data") or []
                found = next((b for b in data if b.get("input_file_id") == file_id), None)
                if found is not None or not page.get("has_more") or not data:
                    break
                after = data[-1]["id"]
        except TransportError as exc:
            self.log.warning("openai batch: cannot list batches to find input file %s (%s); "
                             "its requests are sent again", file_id, exc)
        waiting = [p for p in self.pending.values() if p.batch == file_id]
        if found is None:
            for pending in waiting:
                self._enqueue(pending)
            return
        bid = str(found["id"])
        self.records.append({"event": "submitted", "batch": bid, "file": file_id})
        for pending in waiting:
            pending.batch = bid
        self._watch(bid, self._poll(bid, at_once=True))

    async def _poll(self, bid: str, at_once: bool = False) -> None:
        """Poll a batch until it ends, download its results, resolve its jobs."""
        client = self.client
        assert client is not None
        cfg = self.config
        status = None
        failures = 0
        if not at_once:
            await asyncio.sleep(cfg.batch_poll_interval)
        while True:
            try:
                batch = await client.retrieve(bid)
                failures = 0
            except HTTPStatusError as exc:
                if exc.status in (404, 410):  # the service forgot it: send its jobs again
                    self._final(bid, {"status": "cancelled", "message": f"batch {bid}: {exc}"})
                    return
                failures += 1
                batch = None
                if not is_retryable_status(exc.status) and failures >= 3:
                    # 401/403...: give up for this run; the batch stays recorded, so the
                    # next run (with the problem fixed) attaches to it again
                    for pending in [p for p in self.pending.values() if p.batch == bid]:
                        self._fail(pending, f"polling batch {bid} failed: {exc}")
                    return
            except (RequestTimeout, ConnectError):
                failures += 1
                batch = None
            if failures and failures % 10 == 0:
                self.log.warning("openai batch %s: %d polls failed in a row", bid, failures)
            if batch is not None:
                if batch.get("status") != status:
                    status = batch.get("status")
                    counts = batch.get("request_counts") or {}
                    self.log.info("openai batch %s: %s (%s of %s done)", bid, status,
                                  counts.get("completed", "?"), counts.get("total", "?"))
                if status in FINAL and await self._download(bid, batch):
                    return
            await asyncio.sleep(cfg.batch_poll_interval)

    async def _download(self, bid: str, batch: dict[str, Any]) -> bool:
        """Save a finished batch's result files and resolve its jobs; False when a file
        could not be downloaded (polled again)."""
        client = self.client
        assert client is not None
        event: dict[str, Any] = {"status": batch.get("status")}
        errors = (batch.get("errors") or {}).get("data") or []
        if errors:
            event["message"] = "; ".join(str(e.get("message") or e.get("code")) for e in errors)
        for key, kind in (("output_file_id", "output"), ("error_file_id", "errors")):
            file_id = batch.get(key)
            if not file_id:
                continue
            try:
                data = await self._call(client.content, file_id)
            except TransportError as exc:  # not downloadable now: poll again later
                self.log.warning("openai batch %s: downloading %s failed (%s); trying again",
                                 bid, file_id, exc)
                return False
            event[kind] = await asyncio.to_thread(self.records.save,
                                                  f"{bid}.{kind}.jsonl", data)
        self._final(bid, event)
        return True

    def _final(self, bid: str, event: dict[str, Any]) -> None:
        self.records.append({"event": "final", "batch": bid, **event})
        final = self.records.batches[bid]["final"]
        lines = {e["custom_id"]: e for e in reversed(self.records.lines(bid))}
        for cid in self.records.batches[bid]["custom_ids"]:
            pending = self.pending.get(cid)
            if pending is not None and pending.batch == bid:
                self._resolve(pending, bid, final, line=lines.get(cid), looked_up=True)

    # resolving ------------------------------------------------------------------------------
    def _resolve(self, pending: _Pending, bid: str, final: dict[str, Any], *,
                 line: dict[str, Any] | None = None, looked_up: bool = False,
                 fresh: bool = False) -> None:
        """Answer a job from its batch's result: completions, a retry in a new batch, or
        error completions. ``fresh``: a new call found a batch finished earlier; only an
        answer is taken from it, anything else is sent again."""
        if not looked_up:
            line = self.records.result(bid, pending.cid)
        outcome, value = self._classify(pending, final, line)
        if outcome == "ok" or outcome == "split":
            self._drop(pending)
            pending.settle(value)
        elif fresh or outcome == "retry":
            pending.last_error = value
            expired = final.get("status") == "expired" or (
                line is not None and (line.get("error") or {}).get("code") == "batch_expired")
            if fresh:
                self._enqueue(pending)
            elif pending.attempts > self.config.max_retries:
                self._fail(pending, f"{value} (after {pending.attempts} batches)")
            elif expired:  # ran out of time: nothing to wait for
                self._enqueue(pending)
            else:  # a failed batch (enqueued token limit...) or 429/5xx lines: back off first
                cfg = self.config
                pending.batch = None
                asyncio.get_running_loop().call_later(
                    backoff_delay(pending.attempts - 1, None, cfg.backoff_initial,
                                  cfg.backoff_max), self._enqueue, pending)
        else:
            self._fail(pending, value)

    def _classify(self, pending: _Pending, final: dict[str, Any],
                  line: dict[str, Any] | None) -> tuple[str, Any]:
        status = final.get("status")
        if line is None:
            why = {"expired": "the batch expired before this request ran",
                   "cancelled": "the batch was cancelled",
                   "failed": f"the batch failed: {final.get('message') or 'no reason given'}"}
            return "retry", why.get(str(status), f"no result for this request in the "
                                                 f"{status} batch")
        response = line.get("response")
        if isinstance(response, dict) and response.get("status_code") is not None:
            code = int(response["status_code"])
            body = response.get("body")
            if code < 400:
                completions = self.wire.completions(body, pending.n)
                if not completions[0].ok:
                    return "error", completions[0].error
                return "ok", completions
            message = f"HTTP {code}: {error_message(json.dumps(body))}"
            if self.wire.refuses_n(pending.n, code):
                return "split", None
            return ("retry" if is_retryable_status(code) else "error"), message
        error = line.get("error") or {}
        code = str(error.get("code") or "")
        message = f"{code or 'error'}: {error.get('message') or 'no message'}"
        return ("retry" if code in RETRYABLE_CODES else "error"), message

    def _fail(self, pending: _Pending, message: str) -> None:
        self._drop(pending)
        error = self.wire.error(f"batch: {message}", 0)
        pending.settle([Completion(error=error)] * pending.n)

    def _fail_all(self, pendings: list[_Pending], message: str) -> None:
        for pending in pendings:
            self._fail(pending, message)
