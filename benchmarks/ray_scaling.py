"""The ``ray`` executor against the ``local`` one on this machine, side by side in one run.

1. verify: 200,000 traces (one per row; integers, decimals and fractions, right and wrong,
   some without a think block) through ``rule-verify`` (the same recipe and options), once with
   the local executor and once on a local Ray with 2 workers (2 actors of 0.5 CPU each).
   ``speedup`` is the local stage time over the Ray stage time (actors' start included);
   ``startup_s`` is ``ray.init`` (the Ray processes starting), paid once per run, not per
   stage; ``identical`` is true when both runs' verify rows are equal, shard by shard.
2. distill: questions through ``openai-distill`` (``max_concurrency`` C) against a loopback
   scripted server in another process (log-normal latency, median 0.5 s), with the local
   executor and on Ray with one worker. ``distill_ratio_vs_local`` is the local stage time
   over the Ray stage time with the actor's start (its set-up: the engine's client) left out:
   what streaming through an actor costs once it runs; ``distill_ratio_incl_actor_start``
   keeps it in.

Targets: speedup >= 1.4, distill_ratio_vs_local >= 0.95. The machine is shared: figures are
noisy, run it twice before reading much into a few percent.

    .venv/bin/python benchmarks/ray_scaling.py [--traces 200000] [--questions 4000] [--concurrency 64]

``--smoke``: 2,000 traces, 40 questions at C=8, median latency 0.02 s (Ray still starts), tens
of seconds; checks that the script runs and prints its keys (``make test-bench``), its figures
are not measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).parent))

# what the executor passes when it starts a local Ray itself (worker_niceness 0: Ray's default
# of 15 would run the actors below the local executor's priority on this shared machine)
RAY_INIT = {"num_cpus": 2, "object_store_memory": 200 * 1024**2, "include_dashboard": False,
            "logging_level": "warning", "_system_config": {"worker_niceness": 0}}
TIMINGS: dict[str, Any] = {}
KEYS = ("startup_s", "traces", "local_s", "ray_s", "speedup", "identical",
        "verify_actor_start_s", "verify_actor_cpu_share", "verify_local_cpu_share",
        "verify_shards_per_actor", "questions", "concurrency", "distill_local_s",
        "distill_ray_s", "distill_actor_start_s", "distill_ratio_vs_local",
        "distill_ratio_incl_actor_start", "distill_identical", "cpus", "load_avg_1m", "smoke")


def trace_row(i: int, rng: random.Random) -> dict[str, Any]:
    from dualcurate.formats import render_answer, render_think

    kind = i % 4
    a, b = rng.randint(2, 999), rng.randint(2, 99)
    if kind == 0:
        gold, right, wrong = str(a), str(a), str(a + 1)
    elif kind == 1:
        gold, right, wrong = f"{a / 4:g}", f"{a / 4:.2f}", f"{a / 4 + 1:g}"
    elif kind == 2:
        gold, right, wrong = f"{a}/{b}", f"\\frac{{{a}}}{{{b}}}", f"{a + 1}/{b}"
    else:
        gold, right, wrong = str(a), f"{a}.0", str(-a)
    answer = right if rng.random() < 0.6 else wrong
    think = "" if rng.random() < 0.05 else \
        render_think(f"Work it out: {a} and {b}, step by step.")
    return {"id": f"q{i:07d}", "question": f"Item {i}: compute it.", "answer": gold,
            "split": "train", "traces": [{"text": think + render_answer(answer),
                                          "sample_index": 0}]}


def make_host(rows_fn: Any, n: int) -> Any:
    from dualcurate import PluginHost, Source, hookimpl
    from dualcurate_ray.executor import RayExecutor

    class Rows(Source):
        name = "bench-rows"

        def read(self, ctx: Any) -> Any:
            rng = random.Random(0)
            for start in range(0, n, 4096):
                yield [rows_fn(i, rng) for i in range(start, min(start + 4096, n))]

    class TimedRay(RayExecutor):
        name = "ray"

        def run_map(self, job: Any, stage: Any, ctx: Any) -> Any:
            started = time.monotonic()
            for done in super().run_map(job, stage, ctx):
                pool = self.last_pool
                if pool is not None and "first_ready" not in TIMINGS.get(job.stage_name, {}):
                    TIMINGS.setdefault(job.stage_name, {})["first_ready"] = \
                        pool.first_ready_s
                yield done
            TIMINGS.setdefault(job.stage_name, {})["run_map"] = time.monotonic() - started
            if self.last_pool is not None:
                TIMINGS[job.stage_name]["actors"] = self.last_pool.actor_stats

    class Plugin:
        @hookimpl
        def dualcurate_register_sources(self, register: Any) -> None:
            register(Rows)

        @hookimpl
        def dualcurate_register_executors(self, register: Any) -> None:
            register(TimedRay)

    host = PluginHost(autoload=False, select=["rule-verify", "openai-distill"])
    host.register(Plugin(), name="bench")
    return host


def run(raw: dict[str, Any], out: Path, host: Any) -> Any:
    from dualcurate import Pipeline, load_recipe

    return Pipeline(load_recipe(raw), host=host).run(out)


def stage_seconds(store: Any, name: str) -> float:
    return next(r["seconds"] for r in store.manifest["stages"] if r["name"] == name)


def rows(out: Path, stage: str) -> list[Any]:
    import pyarrow.parquet as pq

    return [pq.read_table(f).to_pylist() for f in sorted((out / stage).glob("shard-*.parquet"))]


def copy_source(src: Path, dst: Path) -> None:
    """The Ray run starts where the local one had its source done (same signature): only the
    map stage under test runs."""
    dst.mkdir(parents=True)
    shutil.copytree(src / "source", dst / "source")
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["stages"] = [s for s in manifest["stages"] if s["name"] == "source"]
    (dst / "manifest.json").write_text(json.dumps(manifest))


def bench_verify(n: int, tmp: Path) -> dict[str, Any]:
    host = make_host(trace_row, n)
    raw = {"run": {"seed": 0}, "source": {"use": "bench-rows"},
           "verify": {"use": "rule-verify", "workers": 1}}
    run({**raw, "run": {"seed": 0, "stages": ["source"]}}, tmp / "v-local", host)
    cpu = time.process_time()
    local = run(raw, tmp / "v-local", host)  # the source is done: the verify stage alone
    local_s = stage_seconds(local, "verify")
    local_share = (time.process_time() - cpu) / local_s
    copy_source(tmp / "v-local", tmp / "v-ray")
    ray_raw = {**raw, "run": {"seed": 0, "executor": "ray",
                              "executor_options": {"num_workers": 2}}}
    ray_store = run(ray_raw, tmp / "v-ray", host)
    ray_s = stage_seconds(ray_store, "verify")
    identical = rows(tmp / "v-local", "verify") == rows(tmp / "v-ray", "verify")
    actors = TIMINGS["verify"].get("actors") or []
    # the CPU the actors got while processing shards: on a loaded shared machine, well
    # under 1 per actor, which caps the speed-up whatever the executor does
    share = sum(a["cpu_s"] for a in actors) / max(sum(a["busy_s"] for a in actors), 1e-9)
    print(f"verify {n} traces: local {local_s:.1f} s (CPU share {local_share:.2f}), ray (2 "
          f"workers) {ray_s:.1f} s (CPU share per actor {share:.2f}; first actor ready after "
          f"{TIMINGS['verify']['first_ready']:.1f} s), "
          f"speedup {local_s / ray_s:.2f}, identical {identical}", flush=True)
    return {"traces": n, "local_s": round(local_s, 2), "ray_s": round(ray_s, 2),
            "speedup": round(local_s / ray_s, 3), "identical": identical,
            "verify_actor_start_s": round(TIMINGS["verify"]["first_ready"], 2),
            "verify_actor_cpu_share": round(share, 3),
            "verify_local_cpu_share": round(local_share, 3),
            "verify_shards_per_actor": [a["shards"] for a in actors]}


def bench_distill(n: int, c: int, tmp: Path, median: float = 0.5) -> dict[str, Any]:
    from distill_overhead import question, start_server

    proc, root = start_server(0.5, median)
    try:
        def q_row(i: int, rng: random.Random) -> dict[str, Any]:
            return {"id": f"d{i:06d}", "question": question(i), "answer": "4", "split": "train"}

        host = make_host(q_row, n)
        raw = {"run": {"seed": 0}, "source": {"use": "bench-rows"},
               "distill": {"use": "openai-distill", "samples_per_question": 1,
                           "max_tokens": 64, "temperature": 0.7,
                           "engine": {"use": "openai", "model": "teacher",
                                      "base_url": f"{root}/v1", "max_retries": 0,
                                      "max_concurrency": c}}}
        local = run(raw, tmp / "d-local", host)
        local_s = stage_seconds(local, "distill")
        copy_source(tmp / "d-local", tmp / "d-ray")
        ray_raw = {**raw, "run": {"seed": 0, "executor": "ray",
                                  "executor_options": {"num_workers": 1}}}
        ray_store = run(ray_raw, tmp / "d-ray", host)
        ray_s = stage_seconds(ray_store, "distill")
        start_s = TIMINGS["distill"]["first_ready"]
        same = rows(tmp / "d-local", "distill") == rows(tmp / "d-ray", "distill")
    finally:
        proc.kill()
    ratio = local_s / max(ray_s - start_s, 1e-9)
    print(f"distill {n} questions at C={c}: local {local_s:.1f} s, ray (1 worker) {ray_s:.1f} s "
          f"of which actor start {start_s:.1f} s; ratio {ratio:.3f} "
          f"({local_s / ray_s:.3f} with the start), identical {same}", flush=True)
    return {"questions": n, "concurrency": c, "distill_local_s": round(local_s, 2),
            "distill_ray_s": round(ray_s, 2), "distill_actor_start_s": round(start_s, 2),
            "distill_ratio_vs_local": round(ratio, 3),
            "distill_ratio_incl_actor_start": round(local_s / ray_s, 3),
            "distill_identical": same}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=200_000)
    parser.add_argument("--questions", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (tens of seconds): checks the script runs, "
                             "measures nothing")
    args = parser.parse_args()
    median = 0.5
    if args.smoke:
        args.traces, args.questions, args.concurrency, median = 2000, 40, 8, 0.02
    import ray

    started = time.monotonic()
    ray.init(**RAY_INIT)
    startup_s = time.monotonic() - started
    print(f"ray.init: {startup_s:.1f} s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    try:
        result = {"startup_s": round(startup_s, 2), **bench_verify(args.traces, tmp),
                  **bench_distill(args.questions, args.concurrency, tmp, median),
                  "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                  "smoke": args.smoke}
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    assert set(result) == set(KEYS), sorted(set(result) ^ set(KEYS))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
