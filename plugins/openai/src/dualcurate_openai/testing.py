"""A scripted OpenAI-compatible chat server on loopback, for tests and benchmarks.

``ScriptedServer`` runs an aiohttp app on 127.0.0.1 (a free port) in a background thread. A
``handler(body, headers, number)`` decides each reply (status, JSON body, headers, delay);
the default answers with a short think block and an answer. Every request is recorded (body,
headers, start and end times), so tests count what reached the server and benchmarks measure
how many requests were in flight.

``n > 1`` is answered as vLLM does (``n_mode="native"``: sample ``i`` drawn with seed
``seed + i``), or ignored, or refused (``"ignore"``, ``"reject"``), to test the engine's
detection. ``GET /stats`` returns ``{"count": n, "answered": samples answered, "spans":
[[start, end, samples], ...]}`` (``?spans=0`` leaves the spans out, ``?bodies=1`` adds the
request bodies when the server records them) (``time.monotonic``,
system-wide on Linux) and ``POST /reset`` clears them: a benchmark running the server in
another process reads them over HTTP.

It also fakes OpenAI's Batch API: ``POST /v1/files`` (multipart, ``purpose=batch``),
``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches/{id}`` and
``GET /v1/batches`` (newest first, ``after``/``limit``). Each line of a batch's input file is
answered by the same handler as an online request (``n`` as ``n_mode`` says); a line the
handler answers with a status >= 400 goes to the batch's error file, as OpenAI does. A
:class:`BatchPlan` (``batch_plan``, one for every batch or a function of the batch's number
and its lines) holds a batch in progress (``delay``, ``hold``), expires it after some lines
(the rest ``batch_expired`` in the error file) or fails it. Lines answered through batches
are recorded in ``batch_seen``, not ``seen``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dualcurate.formats import render_answer, render_think


@dataclass
class Reply:
    """What the server sends back for one request; ``delay`` seconds before answering."""

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    """One request as the server received it; ``samples`` is its ``n``."""

    body: dict[str, Any]
    headers: dict[str, str]
    start: float
    end: float = 0.0
    samples: int = 1


#: How the server treats ``n > 1``: "native" answers n samples (as vLLM and SGLang do),
#: "ignore" answers one (as servers without n support do), "reject" answers 400.
N_MODES = ("native", "ignore", "reject")

Handler = Callable[[dict[str, Any], dict[str, str], int], "Reply | Awaitable[Reply]"]


@dataclass
class BatchPlan:
    """How the fake Batch API runs one batch: ``delay`` seconds in progress (or until
    ``hold`` is set), then every line answered; or, with ``expire_after``, that many lines
    answered and the batch ``expired`` (the others ``batch_expired`` in the error file); or,
    with ``fail``, the batch ``failed`` with that message and nothing answered."""

    delay: float = 0.0
    hold: threading.Event | None = None
    expire_after: int | None = None
    fail: str | None = None


BatchPlanner = Callable[[int, list[dict[str, Any]]], BatchPlan]
BATCH_ENDPOINT = "/v1/chat/completions"


def chat_response(text: str, model: str = "scripted", finish_reason: str = "stop",
                  prompt_tokens: int = 7, completion_tokens: int | None = None) -> dict[str, Any]:
    """A chat.completion JSON body with one choice."""
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens,
                      "completion_tokens": completion_tokens or max(len(text.split()), 1),
                      "total_tokens": prompt_tokens + (completion_tokens or 1)}}


def default_handler(body: dict[str, Any], headers: dict[str, str], number: int) -> Reply:
    """Answers every request with a think block and an answer that names the seed."""
    seed = body.get("seed")
    text = render_think(f"step {number}, seed {seed}", f"so {render_answer(str(seed))}")
    return Reply(body=chat_response(text, model=body.get("model", "")))


class ScriptedServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 in a background thread."""

    def __init__(self, handler: Handler | None = None, record_bodies: bool = True,
                 n_mode: str = "native", batch_plan: BatchPlan | BatchPlanner | None = None):
        self.handler = handler or default_handler
        self.batch_plan = batch_plan
        #: the fake Batch API's state: uploaded files (name, purpose, bytes) and batch objects
        self.files: dict[str, tuple[str, str, bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_seen: list[Seen] = []
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self.record_bodies = record_bodies
        if n_mode not in N_MODES:
            raise ValueError(f"n_mode {n_mode!r}: one of {', '.join(N_MODES)}")
        self.n_mode = n_mode
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def count(self) -> int:
        """HTTP requests received."""
        return len(self.seen)

    @property
    def samples(self) -> int:
        """Samples answered or being answered (a request with ``n = k`` counts k)."""
        return sum(s.samples for s in self.seen)

    def reset(self) -> None:
        """Forget the requests seen (online and through batches); files and batches stay, as
        a real service keeps them."""
        self.seen = []
        self.batch_seen = []
        self.max_in_flight = 0

    # the fake Batch API ------------------------------------------------------------------
    def batch_requests(self) -> list[str]:
        """The custom ids of every line of every batch created, in order."""
        out = []
        for batch in self.batches.values():
            content = self.files[batch["input_file_id"]][2]
            out.extend(json.loads(line)["custom_id"] for line in content.splitlines() if line)
        return out

    def _new_file(self, name: str, purpose: str, data: bytes) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1:04d}"
        self.files[file_id] = (name, purpose, data)
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": name, "purpose": purpose}

    @staticmethod
    def _error(status: int, message: str) -> Any:
        from aiohttp import web

        return web.json_response({"error": {"message": message, "type": "invalid_request_error"}},
                                 status=status)

    async def _upload(self, request: Any) -> Any:
        from aiohttp import web

        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or not hasattr(upload, "file"):
            return self._error(400, "file is required")
        if purpose != "batch":
            return self._error(400, f"purpose {purpose!r}: this fake takes 'batch' only")
        return web.json_response(self._new_file(upload.filename or "upload", purpose,
                                                upload.file.read()))

    async def _file_content(self, request: Any) -> Any:
        from aiohttp import web

        found = self.files.get(request.match_info["file_id"])
        if found is None:
            return self._error(404, "no such file")
        return web.Response(body=found[2], content_type="application/octet-stream")

    async def _create_batch(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return self._error(400, f"input_file_id {file_id!r} is not a file")
        if body.get("endpoint") != BATCH_ENDPOINT:
            return self._error(400, f"endpoint {body.get('endpoint')!r}: only {BATCH_ENDPOINT}")
        if body.get("completion_window") != "24h":
            return self._error(400, "completion_window must be '24h'")
        number = len(self.batches) + 1
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": f"batch_{number:04d}", "object": "batch", "endpoint": BATCH_ENDPOINT,
            "errors": None, "input_file_id": file_id, "completion_window": "24h",
            "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
            "completed_at": None, "failed_at": None, "expired_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata")}
        self.batches[batch["id"]] = batch
        task = asyncio.get_running_loop().create_task(self._run_batch(batch, number))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)
        return web.json_response(batch)

    async def _get_batch(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return self._error(404, "no such batch")
        return web.json_response(batch)

    async def _list_batches(self, request: Any) -> Any:
        from aiohttp import web

        newest = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after:
            ids = [b["id"] for b in newest]
            newest = newest[ids.index(after) + 1:] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = newest[:limit]
        return web.json_response({"object": "list", "data": page,
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None,
                                  "has_more": len(newest) > limit})

    def _plan(self, number: int, lines: list[dict[str, Any]]) -> BatchPlan:
        if self.batch_plan is None:
            return BatchPlan()
        if isinstance(self.batch_plan, BatchPlan):
            return self.batch_plan
        return self.batch_plan(number, lines)

    @staticmethod
    def _fail(batch: dict[str, Any], message: str) -> None:
        batch.update(status="failed", failed_at=int(time.time()),
                     errors={"object": "list", "data": [
                         {"code": "invalid_request", "message": message, "line": None}]})

    async def _run_batch(self, batch: dict[str, Any], number: int) -> None:
        """Validate, wait as planned, answer the lines, write the output and error files."""
        await asyncio.sleep(0)
        try:
            lines = [json.loads(line) for line in
                     self.files[batch["input_file_id"]][2].decode().splitlines() if line.strip()]
        except ValueError as exc:
            return self._fail(batch, f"input file is not JSON lines: {exc}")
        ids = [line.get("custom_id") for line in lines]
        if not lines or len(set(ids)) != len(ids) or not all(ids):
            return self._fail(batch, "every line needs a custom_id, unique in the batch")
        if any(line.get("method") != "POST" or line.get("url") != BATCH_ENDPOINT
               or not isinstance(line.get("body"), dict) for line in lines):
            return self._fail(batch, f"every line must POST a body to {BATCH_ENDPOINT}")
        batch["request_counts"]["total"] = len(lines)
        plan = self._plan(number, lines)
        if plan.fail is not None:
            return self._fail(batch, plan.fail)
        batch.update(status="in_progress", in_progress_at=int(time.time()))
        if plan.delay:
            await asyncio.sleep(plan.delay)
        while plan.hold is not None and not plan.hold.is_set():
            await asyncio.sleep(0.02)
        outputs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for i, line in enumerate(lines):
            entry: dict[str, Any] = {"id": f"batch_req_{number:04d}_{i}",
                                     "custom_id": line["custom_id"], "response": None,
                                     "error": None}
            if plan.expire_after is not None and i >= plan.expire_after:
                entry["error"] = {"code": "batch_expired",
                                  "message": "This request could not be executed before the "
                                             "completion window expired."}
                errors.append(entry)
                continue
            reply = await self._answer(line["body"])
            entry["response"] = {"status_code": reply.status, "request_id": f"req_{number}_{i}",
                                 "body": reply.body or {}}
            (outputs if reply.status < 400 else errors).append(entry)
        batch["request_counts"].update(completed=len(outputs), failed=len(errors))
        for kind, entries in (("output_file_id", outputs), ("error_file_id", errors)):
            if entries:
                data = "".join(json.dumps(e) + "\n" for e in entries).encode()
                batch[kind] = self._new_file(f"{batch['id']}_{kind}.jsonl", "batch_output",
                                             data)["id"]
        if plan.expire_after is not None:
            batch.update(status="expired", expired_at=int(time.time()))
        else:
            batch.update(status="completed", completed_at=int(time.time()))

    async def _answer(self, body: dict[str, Any]) -> Reply:
        """One batch line answered as an online request would be (``n`` per ``n_mode``)."""
        n = int(body.get("n") or 1)
        native = n > 1 and self.n_mode == "native"
        seen = Seen(body if self.record_bodies else {}, {}, time.monotonic(),
                    samples=n if native else 1)
        self.batch_seen.append(seen)
        number = len(self.batch_seen)
        if n > 1 and self.n_mode == "reject":
            reply = Reply(status=400, body={"error": {"message": "n > 1 is not supported"}})
        elif native:
            reply = await self._samples(body, {}, number, n)
        else:
            reply = await self._reply(body, {}, number)
        seen.end = time.monotonic()
        return reply

    async def _chat(self, request: Any) -> Any:
        from aiohttp import web

        start = time.monotonic()
        body = await request.json()
        headers = dict(request.headers)
        n = int(body.get("n") or 1)
        native = n > 1 and self.n_mode == "native"
        seen = Seen(body if self.record_bodies else {}, headers, start,
                    samples=n if native else 1)
        self.seen.append(seen)
        number = len(self.seen)
        self.in_flight += seen.samples
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if n > 1 and self.n_mode == "reject":
                reply = Reply(status=400, body={"error": {"message": "n > 1 is not supported"}})
            elif native:
                reply = await self._samples(body, headers, number, n)
            else:
                reply = await self._reply(body, headers, number)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            return web.json_response(reply.body or {}, status=reply.status, headers=reply.headers)
        finally:
            self.in_flight -= seen.samples
            seen.end = time.monotonic()

    async def _reply(self, body: dict[str, Any], headers: dict[str, str], number: int) -> Reply:
        reply = self.handler(body, headers, number)
        if asyncio.iscoroutine(reply) or isinstance(reply, asyncio.Future):
            reply = await reply
        return reply

    async def _samples(self, body: dict[str, Any], headers: dict[str, str], number: int,
                       n: int) -> Reply:
        """``n`` samples as vLLM draws them: sample ``i`` is the request with ``n = 1`` and
        seed ``seed + i``; the answer comes when the slowest sample is done."""
        seed = body.get("seed")
        replies = [await self._reply({**body, "n": 1,
                                      "seed": None if seed is None else seed + i},
                                     headers, number) for i in range(n)]
        failed = next((r for r in replies if r.status >= 400), None)
        if failed is not None:
            return failed
        choices, prompt, completion = [], 0, 0
        for i, reply in enumerate(replies):
            payload = reply.body or {}
            choice = dict((payload.get("choices") or [{}])[0], index=i)
            choices.append(choice)
            usage = payload.get("usage") or {}
            prompt = int(usage.get("prompt_tokens") or 0)
            completion += int(usage.get("completion_tokens") or 0)
        merged = dict(replies[0].body or {}, choices=choices,
                      usage={"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion})
        return Reply(body=merged, headers=replies[0].headers,
                     delay=max(r.delay for r in replies))

    async def _stats(self, request: Any) -> Any:
        from aiohttp import web

        seen = list(self.seen)
        stats: dict[str, Any] = {
            "count": len(seen), "answered": sum(s.samples for s in seen if s.end),
            "max_in_flight": self.max_in_flight}
        if request.query.get("spans", "1") != "0":
            stats["spans"] = [[s.start, s.end, s.samples] for s in seen]
        if request.query.get("bodies") == "1":
            stats["bodies"] = [s.body for s in seen]
        return web.json_response(stats)

    async def _reset(self, request: Any) -> Any:
        from aiohttp import web

        self.reset()
        return web.json_response({"ok": True})

    async def _start(self, port: int) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self._get_batch)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/reset", self._reset)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=4096)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self, port: int = 0) -> ScriptedServer:
        """Start serving (port 0: a free one) and return self."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="scripted-openai-server")
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        for task in list(self._batch_tasks):
            self._loop.call_soon_threadsafe(task.cancel)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> ScriptedServer:
        return self.start() if self._loop is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(handler: Handler | None = None, port: int = 0,
                  ready: Any = None, n_mode: str = "native") -> None:
    """Run a ScriptedServer until killed (for a separate process); puts the port on the
    ``ready`` queue once listening."""
    server = ScriptedServer(handler, record_bodies=False, n_mode=n_mode).start(port)
    if ready is not None:
        ready.put(server.port)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


__all__ = ["BatchPlan", "Reply", "ScriptedServer", "Seen", "chat_response", "default_handler",
           "serve_forever"]
