"""Items 3, 4 and 13: a real ``curate run`` against a flaky loopback teacher (429 with
Retry-After, 503, 500, a reply slower than the timeout, 400, a 401 that echoes the API key),
then a second run against a healthy one. Failures are recorded, never cached, and retried; the
retry policy is bounded; the API key appears nowhere."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dualcurate_openai.testing import Reply

from .helpers import (
    SECRET,
    clean_env,
    curate,
    distill_recipe,
    item_of,
    rows,
    start_server,
    teacher_reply,
    write_questions,
)

pytestmark = pytest.mark.faults
N = 24
MAX_RETRIES = 2
RETRY_AFTER = 0.4
TIMEOUT = 1.0
# item n behaves by n % 8:
OK, RATE_LIMITED, UNAVAILABLE_TWICE, SLOW_ONCE, BAD_REQUEST, BAD_KEY, ALWAYS_503, ALWAYS_500 = (
    range(8))
NEVER_SUCCEED = (BAD_REQUEST, BAD_KEY, ALWAYS_503, ALWAYS_500)


def error(status: int, message: str, **headers: str) -> Reply:
    return Reply(status=status, body={"error": {"message": message}}, headers=headers)


@dataclass
class Flaky:
    """The flaky teacher: records every attempt per item with its arrival time."""

    healthy: bool = False
    attempts: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    keys_seen: set[str] = field(default_factory=set)

    def __call__(self, body: dict[str, Any], headers: dict[str, str], number: int) -> Reply:
        n = item_of(body)
        self.attempts[n].append(time.monotonic())
        self.keys_seen.add(headers.get("Authorization", ""))
        tries = len(self.attempts[n])
        kind = n % 8
        if self.healthy or kind == OK:
            return teacher_reply(body)
        if kind == RATE_LIMITED and tries == 1:
            return error(429, "rate limited", **{"Retry-After": str(RETRY_AFTER)})
        if kind == UNAVAILABLE_TWICE and tries <= 2:
            return error(503, "overloaded")
        if kind == SLOW_ONCE and tries == 1:
            return Reply(body=teacher_reply(body).body, delay=3 * TIMEOUT)
        if kind == BAD_REQUEST:
            return error(400, f"max_tokens is too large for item {n}")
        if kind == BAD_KEY:  # servers do echo what they were sent
            key = headers.get("Authorization", "").removeprefix("Bearer ")
            return error(401, f"Incorrect API key provided: {key}")
        if kind == ALWAYS_503:
            return error(503, "still overloaded")
        if kind == ALWAYS_500:
            return error(500, "internal error")
        return teacher_reply(body)


@dataclass
class Runs:
    flaky: Flaky
    run_dir: Path
    first: Any
    first_rows: list[dict[str, Any]]
    first_attempts: dict[int, list[float]]
    first_cached: int
    failures: list[tuple[str, str]]
    second: Any
    second_requests: int
    second_rows: list[dict[str, Any]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    tmp = tmp_path_factory.mktemp("flaky")
    flaky = Flaky()
    server = start_server(flaky)
    try:
        recipe = distill_recipe(tmp / "recipe.toml", write_questions(tmp / "q.jsonl", N),
                                server.base_url,
                                engine=f"max_retries = {MAX_RETRIES}\ntimeout = {TIMEOUT}")
        run_dir = tmp / "run"
        env = clean_env(FAULT_TEST_API_KEY=SECRET)
        first = curate("run", str(recipe), "--out", str(run_dir), cwd=tmp, env=env)
        first_rows = rows(run_dir, "distill")
        attempts = {n: list(t) for n, t in flaky.attempts.items()}
        db = sqlite3.connect(run_dir / "cache.sqlite")
        cached = db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
        failures = list(db.execute("SELECT key, error FROM failures"))
        db.close()
        flaky.healthy = True
        server.reset()
        second = curate("run", str(recipe), "--out", str(run_dir), cwd=tmp, env=env)
        return Runs(flaky, run_dir, first, first_rows, attempts, cached, failures, second,
                    server.count, rows(run_dir, "distill"))
    finally:
        server.stop()


def trace_of(rows_: list[dict[str, Any]], n: int) -> dict[str, Any]:
    (row,) = [r for r in rows_ if r["answer"] == str(2 * n)]
    (trace,) = row["traces"]
    return trace


def test_retry_policy_is_bounded_and_selective(runs: Runs) -> None:
    assert runs.first.returncode == 0, runs.first.stderr
    tries = {n: len(t) for n, t in runs.first_attempts.items()}
    expected = {OK: 1, RATE_LIMITED: 2, UNAVAILABLE_TWICE: 3, SLOW_ONCE: 2, BAD_REQUEST: 1,
                BAD_KEY: 1, ALWAYS_503: MAX_RETRIES + 1, ALWAYS_500: MAX_RETRIES + 1}
    assert tries == {n: expected[n % 8] for n in range(N)}
    for n in range(N):
        gaps = [b - a for a, b in zip(runs.first_attempts[n], runs.first_attempts[n][1:],
                                      strict=False)]
        if n % 8 == RATE_LIMITED:  # Retry-After is honoured
            assert gaps[0] >= RETRY_AFTER - 0.02, gaps
        if n % 8 == SLOW_ONCE:  # the client gave up at its timeout, then retried
            assert TIMEOUT / 2 <= gaps[0] < 3 * TIMEOUT, gaps
        assert all(g < 30 for g in gaps)  # backoff is bounded by backoff_max / Retry-After
    print(f"\nitem 4: attempts per kind {dict(sorted({k: expected[k] for k in range(8)}.items()))}")


@pytest.mark.parametrize(("kind", "needles"), [
    (BAD_REQUEST, ["HTTP 400", "max_tokens is too large for item"]),
    (BAD_KEY, ["HTTP 401", "Incorrect API key provided"]),
    (ALWAYS_503, ["HTTP 503", "still overloaded", f"after {MAX_RETRIES} retries"]),
    (ALWAYS_500, ["HTTP 500", "internal error", f"after {MAX_RETRIES} retries"]),
])
def test_the_error_says_which_request_and_why(runs: Runs, kind: int, needles: list[str]) -> None:
    for n in range(kind, N, 8):
        trace = trace_of(runs.first_rows, n)
        # which request: the row (by id) and its sample; why: status, server message, model,
        # endpoint and retries
        assert trace["sample_index"] == 0 and trace["text"] == ""
        for needle in [*needles, "model teacher", "http://127.0.0.1:"]:
            assert needle in trace["error"], (needle, trace["error"])
        assert SECRET not in trace["error"]
    for n in range(N):
        if n % 8 not in NEVER_SUCCEED:
            trace = trace_of(runs.first_rows, n)
            assert trace["error"] is None and trace["answer"] == str(2 * n)
    assert "failed (retried on the next run)" in " ".join(runs.first.stderr.split())


def test_failures_are_recorded_not_cached(runs: Runs) -> None:
    failed = sum(1 for n in range(N) if n % 8 in NEVER_SUCCEED)
    assert runs.first_cached == N - failed
    assert len(runs.failures) == failed
    assert len({key for key, _ in runs.failures}) == failed


def test_failed_requests_are_retried_on_the_next_run(runs: Runs) -> None:
    assert runs.second.returncode == 0, runs.second.stderr
    failed = sum(1 for n in range(N) if n % 8 in NEVER_SUCCEED)
    print(f"\nitem 3: second run sent {runs.second_requests} requests for {failed} failures")
    assert runs.second_requests == failed  # only the failures, each once
    assert len(runs.second_rows) == N
    for n in range(N):
        trace = trace_of(runs.second_rows, n)
        assert trace["error"] is None and trace["answer"] == str(2 * n), n


def test_the_api_key_appears_nowhere(runs: Runs) -> None:
    """Item 13: the key was sent (the server saw it) but is in no log, manifest, shard,
    report, error message or cache byte."""
    from dualcurate.report import write_report

    assert f"Bearer {SECRET}" in runs.flaky.keys_seen
    write_report(runs.run_dir)
    texts = {"stdout/stderr": "".join(r.stdout + r.stderr for r in (runs.first, runs.second)),
             "trace errors": json.dumps(runs.first_rows + runs.second_rows, default=str)}
    for stage in ("source", "distill"):
        texts[f"{stage} shards (decoded)"] = json.dumps(rows(runs.run_dir, stage), default=str)
    files = [p for p in runs.run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files)
    assert any(p.name.startswith("cache.sqlite") for p in files)
    leaks = [name for name, text in texts.items() if SECRET in text]
    leaks += [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    print(f"\nitem 13: {len(files)} files and {len(texts)} outputs searched, {len(leaks)} leaks")
    assert leaks == []


class DroppingServer:
    """A TCP server on 127.0.0.1 that reads each request and hangs up without answering."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(2)
            try:
                conn.recv(65536)
            except OSError:
                pass
            conn.close()

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        self.sock.close()


def drop_every_connection(http_client: str):
    """One request against a server that hangs up each time: (completion, connections)."""
    from dualcurate import ChatRequest, SamplingParams
    from dualcurate_openai.engine import OpenAIEngine

    server = DroppingServer()
    engine = OpenAIEngine({"model": "teacher", "base_url": f"http://127.0.0.1:{server.port}/v1",
                           "max_retries": MAX_RETRIES, "backoff_initial": 0.01,
                           "backoff_max": 0.05, "timeout": 5.0, "http_client": http_client})
    try:
        engine.setup()
        (comp,) = engine.generate([ChatRequest(messages=[{"role": "user", "content": "hi"}])],
                                  SamplingParams(max_tokens=8))[0]
    finally:
        engine.close()
        server.stop()
    return comp, server.connections


@pytest.mark.parametrize("http_client", ["aiohttp", "openai-sdk"])
def test_dropped_connections_are_retried_within_the_bound(http_client: str) -> None:
    comp, connections = drop_every_connection(http_client)
    assert not comp.ok and f"after {MAX_RETRIES} retries" in comp.error
    assert connections == MAX_RETRIES + 1


@pytest.mark.parametrize("http_client", ["aiohttp", "openai-sdk"])
def test_a_dropped_connection_is_reported_as_one(http_client: str) -> None:
    comp, _ = drop_every_connection(http_client)
    assert "connection error" in comp.error and "timed out" not in comp.error


def test_a_malformed_reply_is_a_failure_not_an_output(tmp_path: Path) -> None:
    from dualcurate import ChatRequest, SamplingParams, StageContext
    from dualcurate_openai.engine import OpenAIEngine

    server = start_server(lambda body, headers, n: Reply(body={"unexpected": "shape"}))
    ctx = StageContext.ephemeral("distill", root=tmp_path / "run")
    engine = OpenAIEngine({"model": "teacher", "base_url": server.base_url, "max_retries": 0})
    try:
        engine.setup(ctx)
        (comp,) = ctx.generate(engine, [ChatRequest(messages=[{"role": "user",
                                                               "content": "hi"}])],
                               SamplingParams(max_tokens=8))[0]
    finally:
        engine.close()
        server.stop()
    assert not comp.ok and "no choices" in comp.error
    assert ctx.cache.count() == 0 and len(ctx.cache.failures()) == 1
    ctx.cache.close()
