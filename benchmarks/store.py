"""Store benchmark (issue 2): push 100k and then 1M canonical rows, referencing 1,000 distinct
small images, through the run store (a source stage writing Parquet shards via the pipeline),
then read every row back. Each size runs in its own subprocess so peak RSS is its own.

Prints rows/s (write + read) and peak RSS per size, then as its last line a JSON object with
keys rows_per_s_100k, rows_per_s_1m, peak_rss_ratio (1M / 100k; target <= 1.3).

    .venv/bin/python benchmarks/store.py [--smoke]

``--smoke``: 2,000 and 20,000 rows over 100 images, seconds; checks that the script runs and
prints its keys (``make test-bench``), its figures are not measurements.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

KEYS = ("rows_per_s_100k", "rows_per_s_1m", "peak_rss_ratio", "smoke")
SIZES = (100_000, 1_000_000)
SMOKE_SIZES = (2_000, 20_000)

CHILD = r"""
import io, json, random, resource, sys, time
from dualcurate import (PluginHost, Pipeline, Sample, Source, StageConfig, hookimpl,
                        load_recipe, RunStore)

N = int(sys.argv[1]); OUT = sys.argv[2]; IMAGES = int(sys.argv[3])

class Cfg(StageConfig):
    n: int = 0

class BenchSource(Source):
    name = "bench"
    Config = Cfg

    def read(self, ctx):
        from PIL import Image
        digests = []
        for i in range(IMAGES):
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), (i % 256, (i * 7) % 256, (i * 13) % 256)).save(buf, "PNG")
            digests.append(ctx.images.put(buf.getvalue()))
        rng = random.Random(0)
        batch = []
        for i in range(self.config.n):
            img = digests[rng.randrange(IMAGES)]
            batch.append({"id": f"{i:012d}", "source": "bench", "domain": "math",
                          "images": [img], "question": f"What is {i} + {i}?",
                          "answer": str(2 * i), "answer_type": "number", "choices": [],
                          "caption": "a small coloured square", "original_question": "",
                          "original_answer": "", "meta": "{}"})
            if len(batch) == 4096:
                yield batch
                batch = []
        if batch:
            yield batch

class P:
    @hookimpl
    def dualcurate_register_sources(self, register):
        register(BenchSource)

host = PluginHost(autoload=False)
host.register(P(), name="bench")
recipe = load_recipe({"run": {"shard_size": 10000}, "source": {"use": "bench", "n": N}})
t0 = time.perf_counter()
Pipeline(recipe, host=host).run(OUT)
t_write = time.perf_counter() - t0
t0 = time.perf_counter()
store = RunStore(OUT, create=False)
n = 0
answers = 0
for table in store.iter_tables("source"):
    n += table.num_rows
    answers += sum(1 for a in table.column("answer").to_pylist() if a)
t_read = time.perf_counter() - t0
assert n == N == answers, (n, N)
print(json.dumps({"rows": N, "write_s": t_write, "read_s": t_read,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_size(n: int, images: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(n), f"{tmp}/run", str(images)],
                              capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (seconds): checks the script runs, measures nothing")
    args = parser.parse_args()
    small, large = SMOKE_SIZES if args.smoke else SIZES
    results = {}
    for n in (small, large):
        started = time.perf_counter()
        r = run_size(n, 100 if args.smoke else 1000)
        r["rows_per_s"] = n / (r["write_s"] + r["read_s"])
        results[n] = r
        print(f"{n:>9,} rows: write {r['write_s']:.1f}s, read {r['read_s']:.1f}s, "
              f"{r['rows_per_s']:,.0f} rows/s, peak RSS {r['peak_rss_mb']:.0f} MB "
              f"(wall {time.perf_counter() - started:.1f}s)")
    ratio = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
    print(f"peak RSS ratio {large:,}/{small:,}: {ratio:.2f} (target <= 1.3)")
    result = {"rows_per_s_100k": round(results[small]["rows_per_s"]),
              "rows_per_s_1m": round(results[large]["rows_per_s"]),
              "peak_rss_ratio": round(ratio, 3), "smoke": args.smoke}
    assert set(result) == set(KEYS), sorted(set(result) ^ set(KEYS))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
