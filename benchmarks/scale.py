"""The run store and request cache at scale: 100,000 questions × 4 samples of ~4 KB.

A loopback OpenAI-compatible server (another process, ``dualcurate_openai.testing``) answers
each sample at once with ~4 KB of reasoning text: words drawn (Zipf) from a 30,000-word
made-up vocabulary, with arithmetic in between, seeded by the question and the sample's seed,
so the text is not trivially compressible; about half the answers are right. The recipe is a
source, ``openai-distill`` (4 samples, ``max_concurrency`` 256), ``rule-verify`` and a keep
rule (a filter keeping questions with a verified trace), with the default shard size and
every other option at its default. Each stage runs in a child process (the stages before it
are already done, so the child resumes there), so its wall time and its peak RSS (``VmHWM``,
polled) are its own. The distill child of the large run is SIGKILLed once about half of its
shards are committed; the same command then resumes it (``resume_s``: that run's wall time).

Figures (last line, one JSON object):

* ``rows_per_s``: questions per second of each stage in the large run (distill: over the
  killed run and the resume together; each includes a child's start, about a second).
* ``store_bytes_ratio``: the bytes of every stage's shards over the bytes of one zstd Parquet
  copy of the traces (id, question, answer, the texts) (target <= 1.3).
* ``cache_bytes_ratio``: the request cache's bytes (file, WAL, segments) over the raw bytes of
  the generated texts (target <= 0.5).
* ``peak_rss_mb`` (large run, any stage) and ``peak_rss_ratio`` over the small run (10,000
  questions; target <= 1.2).
* ``cpu_ms_per_sample``: CPU of the small run's distill child (every thread, start-up
  included) per sample (target <= 1.0).
* ``projection``: disk and hours those rates imply for MMFineReason (1.8M questions × 4
  rollouts, ~50 KB each) and OpenMMReasoner (874K questions × 8 traces, at the measured trace
  size): bytes scale with text bytes, hours with rows (at loopback latency: the client's side
  only, a real teacher is slower).

Run: .venv/bin/python benchmarks/scale.py [--questions N] [--small N] [--smoke]
``--smoke``: 240 and 60 questions of ~1 KB, seconds; checks the script runs, measures nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEYS = ("questions", "rows_per_s", "store_bytes_ratio", "cache_bytes_ratio", "peak_rss_mb",
        "peak_rss_ratio", "resume_s", "projection", "cpu_ms_per_sample", "smoke")
SAMPLES = 4
CONCURRENCY = 256
STAGES = ("source", "distill", "verify", "keep")
TARGETS = {"MMFineReason": {"questions": 1_800_000, "traces": 7_200_000, "trace_bytes": 50_000},
           "OpenMMReasoner": {"questions": 874_000, "traces": 874_000 * 8, "trace_bytes": None}}


# the text ----------------------------------------------------------------------------------
def vocabulary(rng: random.Random, size: int = 30_000) -> list[str]:
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiouy"
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choice((1, 2, 2, 3, 3, 4))
        words.add("".join(rng.choice(consonants) + rng.choice(vowels)
                          + (rng.choice(consonants) if rng.random() < 0.4 else "")
                          for _ in range(syllables)))
    ordered = sorted(words)
    rng.shuffle(ordered)  # frequent words are not the alphabetically first
    return ordered


class TraceHandler:
    """~``size`` bytes of reasoning per sample, seeded by the question and the seed."""

    def __init__(self, size: int):
        self.size = size
        self.words = vocabulary(random.Random(0))
        self.cum = list(itertools.accumulate(1 / (r + 1) ** 1.05 for r in range(len(self.words))))

    def text(self, question: str, seed: Any) -> str:
        rng = random.Random(f"{question}|{seed}")
        parts, n = [], 0
        while n < self.size:
            if rng.random() < 0.15:
                a, b = rng.randrange(1, 10 ** rng.randrange(1, 6)), rng.randrange(1, 1000)
                part = f"{a} * {b} = {a * b}."
            else:
                part = " ".join(rng.choices(self.words, cum_weights=self.cum,
                                            k=rng.randrange(4, 14))) + rng.choice(".,;:?")
            parts.append(part)
            n += len(part) + 1
        found = re.search(r"Question (\d+):", question)
        right = 2 * int(found.group(1)) if found else 0
        answer = right if rng.random() < 0.5 else right + 1
        return f"<think>{' '.join(parts)}</think> The answer is \\boxed{{{answer}}}."

    def __call__(self, body: dict[str, Any], headers: dict[str, str], number: int) -> Any:
        from dualcurate_openai.testing import Reply, chat_response

        content = body["messages"][-1]["content"]
        question = content if isinstance(content, str) else content[-1]["text"]
        text = self.text(question, body.get("seed"))
        return Reply(body=chat_response(text, model=body.get("model", ""),
                                        completion_tokens=len(text) // 4))


def serve(size: int, ready: Any) -> None:
    from dualcurate_openai.testing import ScriptedServer

    server = ScriptedServer(TraceHandler(size)).start(0)
    ready.put(server.port)
    while True:
        time.sleep(3600)


def start_server(size: int) -> tuple[Any, str]:
    mp = multiprocessing.get_context("spawn")
    ready = mp.Queue()
    proc = mp.Process(target=serve, args=(size, ready), daemon=True)
    proc.start()
    return proc, f"http://127.0.0.1:{ready.get(timeout=120)}/v1"


# the pipeline ------------------------------------------------------------------------------
def question(i: int) -> str:
    return f"Question {i}: what is {i} + {i}?"


def make_host() -> Any:
    from dualcurate import Filter, PluginHost, Source, StageConfig, hookimpl
    from dualcurate.schema import Sample

    class ScaleConfig(StageConfig):
        n: int = 1000

    class ScaleQuestions(Source):
        name = "scale-questions"
        Config = ScaleConfig

        def read(self, ctx: Any) -> Any:
            for start in range(0, self.config.n, 10_000):
                yield [Sample(source="scale", question=question(i), answer=str(2 * i)).to_row()
                       for i in range(start, min(start + 10_000, self.config.n))]

    class KeepVerified(Filter):
        """The keep rule: questions with at least one verified trace."""

        name = "keep-verified"

        def process(self, rows: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
            return [{**row, "keep": bool(row.get("n_verified"))} for row in rows]

    class ScalePlugin:
        @hookimpl
        def dualcurate_register_sources(self, register: Any) -> None:
            register(ScaleQuestions)

        @hookimpl
        def dualcurate_register_filters(self, register: Any) -> None:
            register(KeepVerified)

    host = PluginHost(autoload=False, select=["rule-verify", "openai-distill"])
    host.register(ScalePlugin(), name="scale")
    return host


def recipe(n: int, base_url: str, out: Path, upto: str) -> dict[str, Any]:
    raw: dict[str, Any] = {"run": {"out": str(out), "seed": 0},
                           "source": {"use": "scale-questions", "n": n}}
    stages = {
        "distill": {"use": "openai-distill", "samples_per_question": SAMPLES, "seed": 0,
                    "max_tokens": 4096,
                    "engine": {"use": "openai", "model": "scale-teacher", "base_url": base_url,
                               "max_concurrency": CONCURRENCY, "api_key_env": "SCALE_NO_KEY"}},
        "verify": {"use": "rule-verify"},
        "filter": {"use": "keep-verified"},
    }
    for name, _ in zip(stages, STAGES[1:STAGES.index(upto) + 1], strict=False):
        raw[name] = stages[name]
    return raw


def child(spec: str, report: str) -> None:
    from dualcurate.pipeline import Pipeline
    from dualcurate.recipe import recipe_from_dict

    Pipeline(recipe_from_dict(json.loads(spec)), host=make_host()).run()
    Path(report).write_text(json.dumps({"cpu_s": time.process_time()}))


def peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_child(spec: dict[str, Any], tmp: Path, kill_at: tuple[Path, int] | None = None
              ) -> dict[str, Any]:
    """One child process running ``spec``: wall s, peak RSS kB, CPU s (None when killed).
    ``kill_at``: (a stage folder, shards): SIGKILL once that many are committed there."""
    report = tmp / f"report-{time.monotonic_ns()}.json"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec), str(report)],
                            stdout=subprocess.DEVNULL)
    peak, killed = 0, False
    while proc.poll() is None:
        peak = max(peak, peak_rss_kb(proc.pid))
        if kill_at is not None and len(list(kill_at[0].glob("shard-*.parquet"))) >= kill_at[1]:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if not killed and proc.returncode != 0:
        raise SystemExit(f"scale: the child running {spec} exited with {proc.returncode}")
    cpu = json.loads(report.read_text())["cpu_s"] if report.exists() else None
    return {"wall": wall, "peak_kb": peak, "cpu": cpu, "killed": killed}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_size(n: int, base_url: str, tmp: Path, kill: bool) -> dict[str, Any]:
    from dualcurate.recipe import RunSection

    out = tmp / f"run-{n}"
    walls: dict[str, float] = {}
    peak = 0
    figures: dict[str, Any] = {}
    for stage in STAGES:
        spec = recipe(n, base_url, out, stage)
        if stage == "distill" and kill:
            shards = -(-n // RunSection().shard_size)
            first = run_child(spec, tmp, (out / "distill", max(shards // 2, 1)))
            second = run_child(spec, tmp)
            walls[stage] = first["wall"] + second["wall"]
            figures["resume_s"] = second["wall"]
            figures["killed"] = first["killed"]
            peak = max(peak, first["peak_kb"], second["peak_kb"])
            continue
        result = run_child(spec, tmp)
        walls[stage] = result["wall"]
        peak = max(peak, result["peak_kb"])
        if stage == "distill":
            figures["distill_cpu_s"] = result["cpu"]
    figures.update(walls=walls, peak_kb=peak, out=out)
    return figures


def measure_bytes(out: Path, tmp: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dualcurate.store import RunStore

    store = RunStore(out, create=False)
    ids, questions, answers, texts = [], [], [], []
    raw = traces = 0
    for table in store.iter_tables("distill"):
        for row in table.select(["id", "question", "answer", "traces"]).to_pylist():
            ids.append(row["id"])
            questions.append(row["question"])
            answers.append(row["answer"])
            row_texts = [t["text"] for t in row["traces"]]
            texts.append(row_texts)
            raw += sum(len(t.encode()) for t in row_texts)
            traces += len(row_texts)
    copy = tmp / "traces-copy.parquet"
    pq.write_table(pa.table({"id": ids, "question": questions, "answer": answers,
                             "traces": texts}), copy, compression="zstd")
    shards = sum(p.stat().st_size for stage in ("source", "distill", "verify", "filter")
                 for p in (out / stage).glob("shard-*.parquet"))
    cache = sum(p.stat().st_size for p in out.glob("cache.sqlite*") if p.is_file()) + \
        dir_bytes(out / "cache.sqlite.d")
    return {"store_bytes": shards, "copy_bytes": copy.stat().st_size, "cache_bytes": cache,
            "raw_text_bytes": raw, "traces": traces}


def projection(big: dict[str, Any], sizes: dict[str, Any], n: int) -> dict[str, Any]:
    per_raw_store = sizes["store_bytes"] / sizes["raw_text_bytes"]
    per_raw_cache = sizes["cache_bytes"] / sizes["raw_text_bytes"]
    measured_trace = sizes["raw_text_bytes"] / sizes["traces"]
    out = {}
    for name, target in TARGETS.items():
        trace_bytes = target["trace_bytes"] or measured_trace
        raw = target["traces"] * trace_bytes
        scale = target["traces"] / sizes["traces"]
        hours = {stage: round(big["walls"][stage] * scale / 3600, 2)
                 for stage in ("distill", "verify", "keep")}
        out[name] = {"traces": target["traces"], "trace_bytes": round(trace_bytes),
                     "store_gb": round(raw * per_raw_store / 1e9, 1),
                     "cache_gb": round(raw * per_raw_cache / 1e9, 1),
                     "hours_at_loopback": hours}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--text-bytes", type=int, default=4096)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (seconds): checks the script runs, measures nothing")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.smoke:
        args.questions, args.small, args.text_bytes = 600, 60, 1024
    os.environ.pop("SCALE_NO_KEY", None)
    proc, base_url = start_server(args.text_bytes)
    try:
        with tempfile.TemporaryDirectory(prefix="scale-") as name:
            tmp = Path(name)
            small = run_size(args.small, base_url, tmp, kill=False)
            big = run_size(args.questions, base_url, tmp, kill=True)
            sizes = measure_bytes(big["out"], tmp)
    finally:
        proc.terminate()
    n = args.questions
    result = {
        "questions": n,
        "rows_per_s": {stage: round(n / big["walls"][stage], 1) for stage in STAGES},
        "store_bytes_ratio": round(sizes["store_bytes"] / sizes["copy_bytes"], 3),
        "cache_bytes_ratio": round(sizes["cache_bytes"] / sizes["raw_text_bytes"], 3),
        "peak_rss_mb": round(big["peak_kb"] / 1024, 1),
        "peak_rss_ratio": round(big["peak_kb"] / max(small["peak_kb"], 1), 3),
        "resume_s": round(big["resume_s"], 2),
        "projection": projection(big, sizes, n),
        "cpu_ms_per_sample": round(1000 * small["distill_cpu_s"] / (args.small * SAMPLES), 3),
        "smoke": args.smoke,
    }
    assert tuple(result) == KEYS, f"printed {tuple(result)}, declared {KEYS}"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
