"""How much the openai-distill path costs on top of a bare HTTP client, and what a rerun costs.

A loopback OpenAI-compatible server (another process) answers every request after a latency
drawn from a log-normal distribution (median 0.5 s, sigma 0.5), with unlimited parallelism.
The draw is seeded by the prompt, so both clients see the same latency for the same request.
In one run:

1. bare: an aiohttp client sending the same 5,000 chat requests, keeping exactly C=256 in
   flight (C workers, each sends its next request the moment one returns);
2. framework: the same 5,000 questions as a source stage, then ``openai-distill`` with
   ``max_concurrency = C`` through the real pipeline (recipe validation, request cache,
   Parquet shards, manifest), one shard holding every row;
3. rerun: the finished distill stage again into a fresh run directory sharing the request
   cache (every request answered from the cache): its time as a fraction of (2) and the
   requests the server saw; also the same command on the same run directory, where the
   pipeline skips the finished stage.

Printed: throughput ratio framework/bare (target >= 0.95), the time-averaged number of
requests in flight while requests remained to be sent, as a fraction of C (target >= 0.95;
the drain after the last send is excluded: no client can keep C in flight then; the
whole-run averages are printed too), the framework's CPU ms per request (whole process: main
thread and the engine's event-loop thread; target <= 1.5) and the rerun figures (targets
<= 0.05 and 0). Last line: one JSON object.

Run: .venv/bin/python benchmarks/distill_overhead.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import multiprocessing
import tempfile
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

MEDIAN, SIGMA = 0.5, 0.5
MARKS: list[tuple[float, float]] = []  # (start, end) of each framework run, time.monotonic
ANSWER = "<think>The sum of the two numbers is computed digit by digit.</think> <answer>4</answer>"


def latency_for(text: str) -> float:
    """A log-normal latency (median 0.5 s, sigma 0.5) drawn deterministically from the prompt."""
    u = (int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") + 0.5) / 2**64
    return MEDIAN * math.exp(SIGMA * NormalDist().inv_cdf(u))


def lognormal_handler(body: dict[str, Any], headers: dict[str, str], number: int) -> Any:
    from dualcurate_openai.testing import Reply, chat_response

    content = body["messages"][-1]["content"]
    text = content if isinstance(content, str) else content[-1]["text"]
    return Reply(body=chat_response(ANSWER, model=body.get("model", ""), completion_tokens=20),
                 delay=latency_for(text))


def start_server() -> tuple[multiprocessing.Process, str]:
    from dualcurate_openai.testing import serve_forever

    mp = multiprocessing.get_context("spawn")
    ready = mp.Queue()
    proc = mp.Process(target=serve_forever, args=(lognormal_handler, 0, ready), daemon=True)
    proc.start()
    port = ready.get(timeout=60)
    return proc, f"http://127.0.0.1:{port}"


def server_stats(root: str, reset: bool = False) -> dict[str, Any]:
    import urllib.request

    if reset:
        urllib.request.urlopen(urllib.request.Request(f"{root}/reset", method="POST")).read()
        return {}
    return json.loads(urllib.request.urlopen(f"{root}/stats").read())


def in_flight(spans: list[list[float]], start: float, end: float) -> float:
    """Time-averaged number of spans open within [start, end]."""
    if end <= start:
        return 0.0
    covered = sum(max(0.0, min(e, end) - max(s, start)) for s, e in spans)
    return covered / (end - start)


def flight_figures(spans: list[list[float]], concurrency: int) -> tuple[float, float]:
    """(in-flight fraction of C while requests remained to be sent, over the whole run)."""
    starts = sorted(s for s, _ in spans)
    first, last_send, last_end = starts[0], starts[-1], max(e for _, e in spans)
    return (in_flight(spans, first, last_send) / concurrency,
            in_flight(spans, first, last_end) / concurrency)


# the framework side ---------------------------------------------------------------------------
def make_host() -> Any:
    from dualcurate import PluginHost, Source, StageConfig, hookimpl
    from dualcurate.schema import Sample

    class BenchConfig(StageConfig):
        n: int = 5000

    class BenchQuestions(Source):
        """Text questions "Question i: what is i + i?"."""

        name = "bench-questions"
        Config = BenchConfig

        def read(self, ctx: Any) -> Any:
            yield [Sample(source="bench", question=question(i), answer=str(2 * i)).to_row()
                   for i in range(self.config.n)]

    class BenchPlugin:
        @hookimpl
        def dualcurate_register_sources(self, register: Any) -> None:
            register(BenchQuestions)

    host = PluginHost(autoload=False, select=["openai-distill"])
    host.register(BenchPlugin(), name="bench")
    return host


def question(i: int) -> str:
    return f"Question {i}: what is {i} + {i}?"


def recipe(n: int, base_url: str, concurrency: int, out: Path, cache: Path,
           with_distill: bool) -> Any:
    from dualcurate.recipe import recipe_from_dict

    raw: dict[str, Any] = {"run": {"shard_size": n, "out": str(out), "cache": str(cache)},
                           "source": {"use": "bench-questions", "n": n}}
    if with_distill:
        raw["distill"] = {"use": "openai-distill", "max_tokens": 64, "seed": 0,
                          "max_concurrency": concurrency,
                          "engine_options": {"model": "bench-teacher", "base_url": base_url,
                                             "timeout": 120}}
    return recipe_from_dict(raw)


def run_framework(n: int, base_url: str, concurrency: int, out: Path,
                  cache: Path) -> tuple[float, float]:
    """Source first (untimed), then the distill stage: (wall s, CPU s)."""
    from dualcurate.pipeline import Pipeline

    Pipeline(recipe(n, base_url, concurrency, out, cache, False), host=make_host()).run()
    pipeline = Pipeline(recipe(n, base_url, concurrency, out, cache, True), host=make_host())
    wall, cpu, began = time.perf_counter(), time.process_time(), time.monotonic()
    store = pipeline.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    MARKS.append((began, time.monotonic()))
    table = store.read_shard("distill", 0)
    traces = table.column("n_traces").to_pylist()
    assert sum(traces) == n, f"expected {n} traces, got {sum(traces)}"
    return wall, cpu


def rerun_same_dir(n: int, base_url: str, concurrency: int, out: Path, cache: Path) -> float:
    """The same command again on the finished run: the stage is skipped as done."""
    from dualcurate.pipeline import Pipeline

    pipeline = Pipeline(recipe(n, base_url, concurrency, out, cache, True), host=make_host())
    wall = time.perf_counter()
    pipeline.run()
    return time.perf_counter() - wall


def bare_payloads(n: int) -> list[bytes]:
    """The request bodies openai-distill sends for the same questions (same prompt text)."""
    from dualcurate.distill import TeacherDistiller
    from dualcurate.schema import Sample

    stage = TeacherDistiller({"engine_options": {"model": "bench-teacher"}})
    bodies = []
    for i in range(n):
        row = Sample(source="bench", question=question(i), answer=str(2 * i)).to_row()
        bodies.append(json.dumps({"model": "bench-teacher", "messages": stage.messages(row),
                                  "temperature": 1.0, "top_p": 0.95, "max_tokens": 64,
                                  "seed": 0}).encode())
    return bodies


async def bare_client(url: str, bodies: list[bytes], concurrency: int) -> None:
    import aiohttp

    jobs = iter(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer EMPTY"}
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def worker() -> None:
            for body in jobs:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.json()
                    assert payload["choices"][0]["message"]["content"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def run_bare(n: int, root: str, concurrency: int) -> tuple[float, float]:
    bodies = bare_payloads(n)
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(bare_client(f"{root}/v1/chat/completions", bodies, concurrency))
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    n, c = args.requests, args.concurrency
    proc, root = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="distill-overhead-") as tmp:
            tmpdir = Path(tmp)
            # warm-up: imports, connection setup, server code paths
            run_bare(min(n, 2 * c), root, c)
            server_stats(root, reset=True)

            bare_wall, bare_cpu = run_bare(n, root, c)
            bare_stats = server_stats(root)
            bare_flight, bare_flight_all = flight_figures(bare_stats["spans"], c)
            server_stats(root, reset=True)

            cache = tmpdir / "cache.sqlite"
            fw_wall, fw_cpu = run_framework(n, f"{root}/v1", c, tmpdir / "run1", cache)
            fw_stats = server_stats(root)
            fw_flight, fw_flight_all = flight_figures(fw_stats["spans"], c)
            server_stats(root, reset=True)

            re_wall, _ = run_framework(n, f"{root}/v1", c, tmpdir / "run2", cache)
            rerun_requests = server_stats(root)["count"]
            same_wall = rerun_same_dir(n, f"{root}/v1", c, tmpdir / "run1", cache)
            same_requests = server_stats(root)["count"] - rerun_requests
    finally:
        proc.terminate()
        proc.join(timeout=10)

    print(f"requests {n}, concurrency {c}, latency log-normal median {MEDIAN}s sigma {SIGMA}")
    print(f"bare aiohttp:   {bare_wall:6.2f} s  {n / bare_wall:7.1f} req/s  "
          f"in flight {bare_flight * c:6.1f} of {c} while sending ({bare_flight_all * c:.1f} "
          f"over the run)  CPU {1000 * bare_cpu / n:.3f} ms/req  server saw "
          f"{bare_stats['count']}")
    print(f"openai-distill: {fw_wall:6.2f} s  {n / fw_wall:7.1f} req/s  "
          f"in flight {fw_flight * c:6.1f} of {c} while sending ({fw_flight_all * c:.1f} "
          f"over the run)  CPU {1000 * fw_cpu / n:.3f} ms/req  server saw {fw_stats['count']}")
    if fw_stats["spans"]:
        began, ended = MARKS[0]
        first = min(s for s, _ in fw_stats["spans"])
        last = max(e for _, e in fw_stats["spans"])
        print(f"openai-distill: first request {first - began:.2f} s after the run started, "
              f"run ended {ended - last:.2f} s after the last answer")
    print(f"rerun (fresh run dir, same request cache): {re_wall:.2f} s, server saw "
          f"{rerun_requests} requests")
    print(f"rerun (same command, same run dir: stage skipped as done): {same_wall:.2f} s, "
          f"server saw {same_requests} requests")
    print(json.dumps({
        "throughput_ratio": round(bare_wall / fw_wall, 4),
        "in_flight_ratio": round(fw_flight, 4),
        "cpu_ms_per_req": round(1000 * fw_cpu / n, 4),
        "rerun_fraction": round(re_wall / fw_wall, 4),
        "rerun_requests": rerun_requests,
        "rerun_same_dir_fraction": round(same_wall / fw_wall, 4),
        "rerun_same_dir_requests": same_requests,
        "bare_in_flight_ratio": round(bare_flight, 4),
        "in_flight_ratio_whole_run": round(fw_flight_all, 4),
        "bare_cpu_ms_per_req": round(1000 * bare_cpu / n, 4),
    }))


if __name__ == "__main__":
    main()
