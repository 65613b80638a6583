"""What the openai-distill stage delivers against a bare HTTP client, at the default shard size.

A loopback OpenAI-compatible server (another process) answers every sample after a latency
drawn from a log-normal distribution (median 0.5 s, sigma 0.5 or 1.0), seeded by the prompt
and the sample's seed, with unlimited parallelism. For each cell of the matrix
k (samples per question) ∈ {1, 8} × sigma ∈ {0.5, 1.0}, in one run:

1. bare: an aiohttp client sending the same chat requests (one per sample, the framework's
   bodies and seeds), keeping exactly C=256 in flight (C workers, each sends its next
   request the moment one returns);
2. framework: the questions as a source stage, then ``openai-distill`` with
   ``max_concurrency = C`` through the real pipeline (recipe validation, request cache,
   Parquet shards, manifest) at the default ``[run] shard_size`` and every other option at
   its default: many shards, so every shard boundary is on the path.

Per cell: throughput ratio framework/bare (wall time of bare / wall time of framework), the
time-averaged number of samples in flight while samples remained to be sent as a fraction of
C, and the framework's CPU ms per sample (whole process: every thread).

Then, for k=1, sigma=0.5:

3. rerun: the finished distill stage again into a fresh run directory sharing the request
   cache: its time as a fraction of (2) and the requests the server saw;
4. kill: the same stage in a child process, SIGKILLed once 40 % of the samples were
   answered; then the same command again on the same run directory. ``resent_after_kill`` is
   how many samples the server saw twice (sent before the kill and again after it: what was
   in flight, at most C), and the rows must equal an uninterrupted run's, id for id.

Targets: throughput_ratio and in_flight_ratio >= 0.95 (minimum over the matrix),
cpu_ms_per_req <= 1.0 (maximum), rerun_fraction <= 0.05, rerun_requests == 0,
resent_after_kill <= C. Last line: one JSON object.

Run: .venv/bin/python benchmarks/distill_overhead.py [--questions N] [--concurrency C] [--smoke]

``--smoke``: 64 questions, C=16, median latency 0.02 s, ``[run] shard_size`` 16 (the only
run that changes the default: many shards at tiny sizes), seconds; checks that the script runs
and prints its keys (``make test-bench``), its figures are not measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import NormalDist
from typing import Any

from dualcurate.formats import render_answer, render_think

KEYS = ("throughput_ratio", "in_flight_ratio", "cpu_ms_per_req", "rerun_fraction",
        "rerun_requests", "resent_after_kill", "sent_before_kill", "sent_after_kill",
        "rows_identical_after_kill", "shard_size", "concurrency", "cells", "smoke")
KILL_FIGURES = KEYS[3:9]  # None when the k=1, sigma=0.5 cell did not run (--cells)
MEDIAN = 0.5
SMOKE = {"questions": 64, "concurrency": 16, "median": 0.02, "shard_size": 16}
ANSWER = render_think("The sum of the two numbers is computed digit by digit.",
                      " " + render_answer("4"))


def latency_for(key: str, sigma: float, median: float = MEDIAN) -> float:
    """A log-normal latency (median 0.5 s) drawn deterministically from ``key``."""
    u = (int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") + 0.5) / 2**64
    return median * math.exp(sigma * NormalDist().inv_cdf(u))


class LognormalHandler:
    """Answers each sample after its own latency, drawn from its prompt and seed."""

    def __init__(self, sigma: float, median: float = MEDIAN):
        self.sigma = sigma
        self.median = median

    def __call__(self, body: dict[str, Any], headers: dict[str, str], number: int) -> Any:
        from dualcurate_openai.testing import Reply, chat_response

        content = body["messages"][-1]["content"]
        text = content if isinstance(content, str) else content[-1]["text"]
        return Reply(body=chat_response(f"{ANSWER} seed {body.get('seed')}",
                                        model=body.get("model", ""), completion_tokens=20),
                     delay=latency_for(f"{text}|{body.get('seed')}", self.sigma, self.median))


def serve(sigma: float, ready: Any, median: float = MEDIAN) -> None:
    from dualcurate_openai.testing import ScriptedServer

    server = ScriptedServer(LognormalHandler(sigma, median), record_bodies=True).start(0)
    ready.put(server.port)
    while True:
        time.sleep(3600)


def start_server(sigma: float, median: float = MEDIAN) -> tuple[multiprocessing.Process, str]:
    mp = multiprocessing.get_context("spawn")
    ready = mp.Queue()
    proc = mp.Process(target=serve, args=(sigma, ready, median), daemon=True)
    proc.start()
    return proc, f"http://127.0.0.1:{ready.get(timeout=60)}"


def server_stats(root: str, query: str = "") -> dict[str, Any]:
    return json.loads(urllib.request.urlopen(f"{root}/stats{query}").read())


def server_reset(root: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{root}/reset", method="POST")).read()


def in_flight(spans: list[list[float]], start: float, end: float) -> float:
    """Time-averaged number of samples in flight within [start, end]."""
    if end <= start:
        return 0.0
    covered = sum(n * max(0.0, min(e, end) - max(s, start)) for s, e, n in spans)
    return covered / (end - start)


def flight_fraction(spans: list[list[float]], concurrency: int) -> float:
    """Samples in flight while samples remained to be sent, as a fraction of C (the drain
    after the last send is excluded: no client can keep C in flight then)."""
    starts = sorted(s for s, _, _ in spans)
    return in_flight(spans, starts[0], starts[-1]) / concurrency


# the framework side ---------------------------------------------------------------------------
def question(i: int) -> str:
    return f"Question {i}: what is {i} + {i}?"


def recipe_dict(n: int, k: int, base_url: str, concurrency: int, out: Path, cache: Path,
                with_distill: bool, shard_size: int | None = None) -> dict[str, Any]:
    # [run] shard_size is left at its default (what users get) but in --smoke runs
    run: dict[str, Any] = {"out": str(out), "cache": str(cache)}
    if shard_size is not None:
        run["shard_size"] = shard_size
    raw: dict[str, Any] = {"run": run, "source": {"use": "bench-questions", "n": n}}
    if with_distill:
        raw["distill"] = {"use": "openai-distill", "max_tokens": 64, "seed": 0,
                          "samples_per_question": k,
                          "engine": {"use": "openai", "model": "bench-teacher",
                                     "base_url": base_url, "timeout": 120,
                                     "max_concurrency": concurrency}}
    return raw


def make_host() -> Any:
    from dualcurate import PluginHost, Source, StageConfig, hookimpl
    from dualcurate.schema import Sample

    class BenchConfig(StageConfig):
        n: int = 2000

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


def run_pipeline(raw: dict[str, Any]) -> Any:
    from dualcurate.pipeline import Pipeline
    from dualcurate.recipe import recipe_from_dict

    return Pipeline(recipe_from_dict(raw), host=make_host()).run()


def run_framework(n: int, k: int, base_url: str, c: int, out: Path, cache: Path,
                  shard_size: int | None = None) -> tuple[float, float]:
    """Source first (untimed), then the distill stage: (wall s, CPU s of every thread)."""
    run_pipeline(recipe_dict(n, k, base_url, c, out, cache, False, shard_size))
    wall, cpu = time.perf_counter(), time.process_time()
    store = run_pipeline(recipe_dict(n, k, base_url, c, out, cache, True, shard_size))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    shards = store.finished_shards("distill")
    traces = sum(sum(t.column("n_traces").to_pylist()) for t in store.iter_tables("distill"))
    assert traces == n * k, f"expected {n * k} traces, got {traces}"
    assert len(shards) > 1, "the benchmark must cross shard boundaries"
    return wall, cpu


def rows_of(out: Path) -> list[tuple[str, list[str]]]:
    from dualcurate.store import RunStore

    store = RunStore(out, create=False)
    return [(r["id"], [t["text"] for t in r["traces"]])
            for t in store.iter_tables("distill") for r in t.to_pylist()]


def bare_bodies(n: int, k: int) -> list[bytes]:
    """The request bodies openai-distill sends for the same questions: same prompt, same
    per-sample seeds."""
    from dualcurate.chat import ChatRequest
    from dualcurate.sampling import SamplingParams
    from dualcurate.schema import Sample
    from dualcurate_openai.distill import OpenAIDistiller

    stage = OpenAIDistiller({"engine": {"use": "openai", "model": "bench-teacher"}})
    sampling = SamplingParams(seed=0)
    bodies = []
    for i in range(n):
        row = Sample(source="bench", question=question(i), answer=str(2 * i)).to_row()
        messages = stage.messages(row)
        request = ChatRequest(messages=messages, n=k)
        for s in range(k):
            bodies.append(json.dumps({"model": "bench-teacher", "messages": messages,
                                      "temperature": 1.0, "top_p": 0.95, "max_tokens": 64,
                                      "seed": sampling.seed_for(s, request)}).encode())
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


def run_bare(n: int, k: int, root: str, c: int) -> tuple[float, float]:
    bodies = bare_bodies(n, k)
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(bare_client(f"{root}/v1/chat/completions", bodies, c))
    return time.perf_counter() - wall, time.process_time() - cpu


def sample_keys(root: str) -> list[str]:
    """One key per sample the server saw: its prompt and seed."""
    keys = []
    for body in server_stats(root, "?spans=0&bodies=1")["bodies"]:
        seed, n = body.get("seed"), int(body.get("n") or 1)
        text = json.dumps(body["messages"], sort_keys=True)
        keys.extend(f"{text}|{None if seed is None else seed + i}" for i in range(n))
    return keys


def kill_and_resume(n: int, root: str, c: int, tmp: Path, reference: Path,
                    shard_size: int | None = None) -> dict[str, Any]:
    """SIGKILL the stage at 40 % of its samples, rerun the same command, count re-sends."""
    out, cache = tmp / "killed", tmp / "killed-cache.sqlite"
    run_pipeline(recipe_dict(n, 1, f"{root}/v1", c, out, cache, False, shard_size))
    server_reset(root)
    spec = json.dumps(recipe_dict(n, 1, f"{root}/v1", c, out, cache, True, shard_size))
    child = subprocess.Popen([sys.executable, __file__, "--child", spec],
                             stdout=subprocess.DEVNULL)
    while server_stats(root, "?spans=0")["answered"] < 0.4 * n and child.poll() is None:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = set(sample_keys(root))
    server_reset(root)
    run_pipeline(json.loads(spec))
    after = sample_keys(root)
    return {"resent_after_kill": sum(1 for key in after if key in before),
            "sent_before_kill": len(before), "sent_after_kill": len(after),
            "rows_identical_after_kill": rows_of(out) == rows_of(reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=2000, help="questions at k=1")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--cells", default="", help="only these cells, e.g. k8_sigma1.0")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (seconds): checks the script runs, measures nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # the process the kill test SIGKILLs
        run_pipeline(json.loads(args.child))
        return
    from dualcurate.recipe import RunSection

    shard_size, median = None, MEDIAN
    if args.smoke:
        args.questions, args.concurrency = SMOKE["questions"], SMOKE["concurrency"]
        shard_size, median = SMOKE["shard_size"], SMOKE["median"]
    c = args.concurrency
    cells: dict[str, dict[str, Any]] = {}
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="distill-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        wanted = set(filter(None, args.cells.split(",")))
        for sigma in (0.5, 1.0):
            if wanted and not any(c.endswith(f"sigma{sigma}") for c in wanted):
                continue
            proc, root = start_server(sigma, median)
            try:
                run_bare(min(args.questions, 2 * c), 1, root, c)  # warm-up
                for k in (1, 8):
                    if wanted and f"k{k}_sigma{sigma}" not in wanted:
                        continue
                    n = args.questions if k == 1 else max(args.questions // 2, 1)
                    server_reset(root)
                    bare_wall, _ = run_bare(n, k, root, c)
                    bare_flight = flight_fraction(server_stats(root)["spans"], c)
                    server_reset(root)
                    cell = f"k{k}_sigma{sigma}"
                    out, cache = tmp / cell, tmp / f"{cell}.sqlite"
                    wall, cpu = run_framework(n, k, f"{root}/v1", c, out, cache, shard_size)
                    stats = server_stats(root)
                    cells[cell] = {
                        "questions": n, "samples": n * k,
                        "throughput_ratio": round(bare_wall / wall, 4),
                        "in_flight_ratio": round(flight_fraction(stats["spans"], c), 4),
                        "bare_in_flight_ratio": round(bare_flight, 4),
                        "cpu_ms_per_req": round(1000 * cpu / (n * k), 4),
                        "bare_s": round(bare_wall, 2), "framework_s": round(wall, 2),
                        "http_requests": stats["count"]}
                    print(f"{cell}: {n} questions x {k}: bare {bare_wall:.2f} s, framework "
                          f"{wall:.2f} s -> {json.dumps(cells[cell])}", flush=True)
                    if k == 1 and sigma == 0.5:
                        server_reset(root)
                        re_wall, _ = run_framework(n, 1, f"{root}/v1", c, tmp / "rerun", cache,
                                                   shard_size)
                        figures["rerun_fraction"] = round(re_wall / wall, 4)
                        figures["rerun_requests"] = server_stats(root)["count"]
                        figures.update(kill_and_resume(n, root, c, tmp, out, shard_size))
                        print(f"rerun and kill: {json.dumps(figures)}", flush=True)
            finally:
                proc.terminate()
                proc.join(timeout=10)
    result = {
        "throughput_ratio": min(v["throughput_ratio"] for v in cells.values()),
        "in_flight_ratio": min(v["in_flight_ratio"] for v in cells.values()),
        "cpu_ms_per_req": max(v["cpu_ms_per_req"] for v in cells.values()),
        **{key: figures.get(key) for key in KILL_FIGURES},
        "shard_size": shard_size or RunSection().shard_size,
        "concurrency": c,
        "cells": cells,
        "smoke": args.smoke,
    }
    assert set(result) == set(KEYS), sorted(set(result) ^ set(KEYS))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
