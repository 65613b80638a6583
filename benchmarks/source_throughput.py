"""hf-dataset source benchmark (issue 9): 200k rows with 5k distinct images, read from a
Parquet file through the hf-dataset source into a real run store (the pipeline writes the
Parquet shards and stores every image once).

Side by side, each in its own subprocess so its peak RSS is its own:

* the full 200k rows;
* the first 50k rows of the same file (``limit``): peak RSS should be about the same, memory is
  flat in the dataset's size;
* 10k rows of a file where every row has its own image, the cost of the decode the cache saves;
* near-duplicate removal on (``[source.dedup] near = true``) over the 200k rows and their first
  50k: rows/s and peak RSS at both sizes (flat: per row the index keeps 32 bytes);
* the near-duplicate index alone over 60k text-only rows (one group: every text-only row is
  compared with the others), rows/s per 20k rows, twice: scanning the whole group per row
  (what a group below ``SCAN_LIMIT`` does; quadratic) and through the HNSW index a group gets
  past ``SCAN_LIMIT`` rows (flat).

Wall-clock figures include the image store's fsync per new image (core's durability rule) and
whatever else the machine is doing; rows per CPU-second are printed beside them.

Prints one line per measurement, then as its last line a JSON object with keys ``rows_per_s``
and ``peak_rss_mb`` (the 200k run), ``near_dedup_rows_per_s`` and ``near_dedup_peak_rss_mb``
(200k rows with near-duplicate removal) plus the other figures.

    .venv/bin/python benchmarks/source_throughput.py [--smoke]

``--smoke``: every size divided by 100 (2,000 rows over 50 images, ...), seconds; checks that
the script runs and prints its keys (``make test-bench``), its figures are not measurements.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEYS = ("rows_per_s", "peak_rss_mb", "rows", "rows_out", "images_decoded", "peak_rss_mb_50k",
        "peak_rss_ratio_200k_vs_50k", "rows_per_cpu_s", "rows_per_s_every_row_decoded",
        "rows_per_cpu_s_every_row_decoded", "near_dedup_rows_per_s", "near_dedup_peak_rss_mb",
        "near_dedup_peak_rss_mb_50k", "near_dedup_peak_rss_ratio_200k_vs_50k",
        "near_dedup_rows_per_cpu_s", "near_dedup_near_duplicates", "near_dedup_conflicts",
        "near_dedup_text_only_scan_rows_per_s_per_20k",
        "near_dedup_text_only_hnsw_rows_per_s_per_20k", "smoke")
N_ROWS = 200_000
N_IMAGES = 5_000
SMOKE_DIVISOR = 100  # --smoke: every size divided by this

CHILD = r"""
import json, resource, sys, time
from dualcurate import Pipeline, PluginHost, load_recipe

path, out, limit, near = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
source = {"name": "bench", "domain": "math", "parquet": path}
if limit:
    source["limit"] = limit
recipe = load_recipe({"run": {"shard_size": 8192},
                      "source": {"use": "hf-dataset", "batch_size": 1024, "sources": [source],
                                 "dedup": {"near": near}}})
host = PluginHost(autoload=False, select=["hf-dataset"])
t0 = time.perf_counter()
store = Pipeline(recipe, host=host).run(out)
seconds = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
report = json.loads((store.root / "source" / "artifacts" / "standardisation.json").read_text())
status = open("/proc/self/status").read()
peak_kb = int(status.split("VmHWM:")[1].split()[0])
print(json.dumps({"rows_in": report["totals"]["rows_in"], "rows_out": store.count_rows("source"),
                  "seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime, "decoded": report["images"]["decoded"],
                  "near": report["totals"]["duplicates"].get("near", 0),
                  "conflicts": sum(s["near_conflicts"] for s in report["sources"].values()),
                  "peak_rss_mb": peak_kb / 1024}))
"""

TEXT_ONLY = r"""
import json, sys, time
import dualcurate_hf.dedup as dedup
from dualcurate_hf.dedup import DedupOptions, NearDuplicateIndex

n, window, dedup.SCAN_LIMIT = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
index = NearDuplicateIndex(DedupOptions(near=True))
rates, t = [], time.perf_counter()
for i in range(n):
    index.check_and_add(f"{i:024x}", f"Question {i}: what is the area of shape "
                        f"{i * 7919 % 100003}?", str(i % 500), ())
    if (i + 1) % window == 0:
        now = time.perf_counter()
        rates.append(window / (now - t))
        t = now
print(json.dumps({"rates": rates, "scan_limit": dedup.SCAN_LIMIT}))
"""


def build(path: Path, n_rows: int, n_images: int) -> None:
    """Parquet with ``n_rows`` noisy questions over ``n_images`` distinct PNGs (drawn at
    random; row i gets image i when there are as many images as rows)."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dualcurate_hf.sample_data import image_bytes

    images = [image_bytes(i, size=(64, 48)) for i in range(n_images)]
    rng = random.Random(0)
    writer = None
    chunk = 10_000
    for start in range(0, n_rows, chunk):
        rows = range(start, min(start + chunk, n_rows))
        table = pa.table({
            "question": [f"Question {i + 1}: In the figure, what is the area of shape {i}? "
                         f"(5 points)" for i in rows],
            "answer": [f"\\boxed{{{rng.randrange(1, 500)} cm^2}}" for _ in rows],
            "image": [images[i if n_images == n_rows else rng.randrange(n_images)]
                      for i in rows],
        })
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=4096)
    assert writer is not None
    writer.close()


def measure(path: Path, tmp: Path, name: str, limit: int = 0, near: bool = False) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(tmp / name), str(limit),
                           "1" if near else "0"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows_in"] / result["seconds"]
    print(f"{name:>12}: {result['rows_in']:>7} rows in {result['seconds']:6.1f} s = "
          f"{result['rows_per_s']:8.0f} rows/s ({result['rows_in'] / result['cpu_s']:6.0f} per "
          f"CPU-s), {result['decoded']:>6} decodes, "
          f"peak RSS {result['peak_rss_mb']:6.0f} MB"
          + (f", {result['near']} near duplicates, {result['conflicts']} conflicts" if near
             else ""), flush=True)
    return result


def text_only(how: str, n: int = 60_000, window: int = 20_000) -> list[float]:
    limit = 10**9 if how == "scan" else 0
    proc = subprocess.run([sys.executable, "-c", TEXT_ONLY, str(n), str(window), str(limit)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"text-only failed:\n{proc.stderr[-3000:]}")
    rates = json.loads(proc.stdout.strip().splitlines()[-1])["rates"]
    print(f"text-only {how:>4}: {n} rows in one group, rows/s per {window}: "
          + ", ".join(f"{r:.0f}" for r in rates), flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="sizes / 100 (seconds): checks the script runs, measures nothing")
    args = parser.parse_args()
    d = SMOKE_DIVISOR if args.smoke else 1
    with tempfile.TemporaryDirectory(prefix="bench-source-") as name:
        tmp = Path(name)
        t0 = time.perf_counter()
        shared = tmp / "shared.parquet"
        build(shared, N_ROWS // d, N_IMAGES // d)
        distinct = tmp / "distinct.parquet"
        build(distinct, 10_000 // d, 10_000 // d)
        print(f"built {N_ROWS // d} rows / {N_IMAGES // d} images "
              f"({shared.stat().st_size / 2**20:.0f} MB Parquet) in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        full = measure(shared, tmp, "200k", 0)
        part = measure(shared, tmp, "50k", 50_000 // d)
        uncached = measure(distinct, tmp, "10k-distinct", 0)
        near_full = measure(shared, tmp, "near-200k", 0, near=True)
        near_part = measure(shared, tmp, "near-50k", 50_000 // d, near=True)
        scan = text_only("scan", 60_000 // d, 20_000 // d)
        hnsw = text_only("hnsw", 60_000 // d, 20_000 // d)
    result = {
        "rows_per_s": round(full["rows_per_s"], 1),
        "peak_rss_mb": round(full["peak_rss_mb"], 1),
        "rows": full["rows_in"],
        "rows_out": full["rows_out"],
        "images_decoded": full["decoded"],
        "peak_rss_mb_50k": round(part["peak_rss_mb"], 1),
        "peak_rss_ratio_200k_vs_50k": round(full["peak_rss_mb"] / part["peak_rss_mb"], 3),
        "rows_per_cpu_s": round(full["rows_in"] / full["cpu_s"], 1),
        "rows_per_s_every_row_decoded": round(uncached["rows_per_s"], 1),
        "rows_per_cpu_s_every_row_decoded": round(uncached["rows_in"] / uncached["cpu_s"], 1),
        "near_dedup_rows_per_s": round(near_full["rows_per_s"], 1),
        "near_dedup_peak_rss_mb": round(near_full["peak_rss_mb"], 1),
        "near_dedup_peak_rss_mb_50k": round(near_part["peak_rss_mb"], 1),
        "near_dedup_peak_rss_ratio_200k_vs_50k": round(near_full["peak_rss_mb"]
                                                       / near_part["peak_rss_mb"], 3),
        "near_dedup_rows_per_cpu_s": round(near_full["rows_in"] / near_full["cpu_s"], 1),
        "near_dedup_near_duplicates": near_full["near"],
        "near_dedup_conflicts": near_full["conflicts"],
        "near_dedup_text_only_scan_rows_per_s_per_20k": [round(r, 1) for r in scan],
        "near_dedup_text_only_hnsw_rows_per_s_per_20k": [round(r, 1) for r in hnsw],
        "smoke": args.smoke,
    }
    assert set(result) == set(KEYS), sorted(set(result) ^ set(KEYS))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
