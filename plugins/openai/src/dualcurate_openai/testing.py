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
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


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
    return Reply(body=chat_response(f"<think>step {number}, seed {seed}</think>"
                                    f"so <answer>{seed}</answer>", model=body.get("model", "")))


class ScriptedServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 in a background thread."""

    def __init__(self, handler: Handler | None = None, record_bodies: bool = True,
                 n_mode: str = "native"):
        self.handler = handler or default_handler
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
        self.seen = []
        self.max_in_flight = 0

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


__all__ = ["Reply", "ScriptedServer", "Seen", "chat_response", "default_handler",
           "serve_forever"]
