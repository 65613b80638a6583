"""What a run's shards weigh on disk (issue 29): map stages store column deltas.

Pipeline: the ``synthetic`` source's train puzzles (2,000 per family, 6,000 questions), the
``reference`` distiller at 4 traces per question, ``rule-verify`` (a verdict per trace) and the
``difficulty`` filter on the scripted proxy (4 rollouts, ``keep``). Run three times:

* ``full``: every map stage writes its whole rows (what the store did before column deltas);
* ``flat``: deltas by whole column (a changed ``traces`` column stored whole);
* ``delta``: the store as it is (a ``list<struct>`` column stores only its changed fields).

Prints the bytes of each stage's shards per variant and the ratio of all stages' shards to one
zstd Parquet copy of the final stage's rows; checks that every variant reads the same rows
from every stage. Last line: one JSON object.

Run: .venv/bin/python benchmarks/store_deltas.py [--per-family N] [--smoke]

``--smoke``: 20 questions per family, seconds; checks that the script runs and prints its keys
(``make test-bench``), its figures are not measurements.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

KEYS = ("questions", "ratio_full", "ratio_flat", "ratio_delta", "stage_bytes_full",
        "stage_bytes_delta", "read_s_full", "read_s_delta", "smoke")
NEEDS = ("dualcurate_synthetic", "dualcurate_verify", "dualcurate_difficulty")

RECIPE = {
    "run": {"shard_size": 1000, "seed": 0},
    "source": {"use": "synthetic", "train_per_family": 2000, "eval_per_family": 0},
    "distill": {"use": "reference", "samples_per_question": 4},
    "verify": {"use": "rule-verify"},
    "filter": {"use": "difficulty",
               "engine": {"use": "scripted", "model": "scripted-proxy", "probabilities": {}},
               "samples_per_question": 4, "adaptive": False,
               "keep": "pass_rate < 1", "use_check": False,
               "verifier_stage": ["answer-judge"]},
}


def run(variant: str, recipe: dict, out: Path) -> dict:
    import pyarrow.parquet as pq

    from dualcurate import Pipeline, RunStore, load_recipe
    from dualcurate import store as store_mod
    from dualcurate_difficulty.scripted import scripted_host

    host = scripted_host()
    for name in ("synthetic", "reference", "rule-verify"):
        host.load(name)
    saved = store_mod.RunStore._delta, store_mod._changed_fields
    if variant == "full":
        store_mod.RunStore._delta = lambda self, table, base: None
    elif variant == "flat":
        store_mod._changed_fields = lambda *args: None
    try:
        store = Pipeline(load_recipe(recipe), host=host).run(out)
    finally:
        store_mod.RunStore._delta, store_mod._changed_fields = saved
    store = RunStore(out, create=False)
    names = [s["name"] for s in store.manifest["stages"]]
    sizes = {n: sum(p.stat().st_size for p in store.shard_files(n)) for n in names}
    started = time.perf_counter()
    rows = {n: store.dataset(n).to_list() for n in names}
    read_s = time.perf_counter() - started
    final = store.dataset(names[-1]).data.table
    one_copy = out / "one-copy.parquet"
    pq.write_table(final, one_copy, compression="zstd")
    return {"sizes": sizes, "one_copy": one_copy.stat().st_size, "rows": rows,
            "read_s": read_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-family", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (seconds): checks the script runs, measures nothing")
    args = parser.parse_args()
    per_family = 20 if args.smoke else args.per_family
    recipe = json.loads(json.dumps(RECIPE))
    recipe["source"]["train_per_family"] = per_family
    if args.smoke:
        recipe["run"]["shard_size"] = 16
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("full", "flat", "delta"):
            started = time.perf_counter()
            results[variant] = r = run(variant, json.loads(json.dumps(recipe)),
                                       Path(tmp) / variant)
            total = sum(r["sizes"].values())
            print(f"{variant:>5}: " + ", ".join(f"{n} {b / 1e6:.3f} MB"
                                              for n, b in r["sizes"].items())
                  + f"; all {total / 1e6:.3f} MB = {total / r['one_copy']:.2f} x one zstd copy "
                  f"({r['one_copy'] / 1e6:.3f} MB); read {r['read_s']:.2f}s "
                  f"(wall {time.perf_counter() - started:.1f}s)", flush=True)
    for variant in ("flat", "delta"):
        assert results[variant]["rows"] == results["full"]["rows"], \
            f"{variant}: rows differ from full copies"
    ratio = {v: sum(r["sizes"].values()) / r["one_copy"] for v, r in results.items()}
    result = {"questions": 3 * per_family, "ratio_full": round(ratio["full"], 3),
              "ratio_flat": round(ratio["flat"], 3), "ratio_delta": round(ratio["delta"], 3),
              "stage_bytes_full": results["full"]["sizes"],
              "stage_bytes_delta": results["delta"]["sizes"],
              "read_s_full": round(results["full"]["read_s"], 3),
              "read_s_delta": round(results["delta"]["read_s"], 3), "smoke": args.smoke}
    assert set(result) == set(KEYS), sorted(set(result) ^ set(KEYS))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
