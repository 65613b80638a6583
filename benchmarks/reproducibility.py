"""Same recipe, same seed, same rows: the default recipe (the offline demo) up to the
difficulty filter, run three ways, compared row for row.

1. fresh: its own run directory and request cache;
2. fresh again: another run directory and cache, same recipe and seed;
3. other sizes: another ``shard_size`` (100 instead of 256) and another proxy ``batch_size``
   (16 instead of 64), so shards, batches and the threads that feed them all differ.

The base model (``[models.base]``) is built once and shared: building it is itself seeded
training, and what is measured here is what the stages make of it. Then:

* ``hf_batch_invariant``: the hf engine on that base model gives every sample the same text
  alone (batch size 1) and in batches of 16 with the requests in reverse order;
* ``training_equal``: the default recipe's SFT stage run twice on copies of run 1's filter
  stage (two run directories) gives byte-identical weights.

Prints as its last line ``{"rows": …, "differing_fresh": 0, "differing_sizes": 0,
"hf_batch_invariant": true, "training_equal": true, "seconds": {...}, "smoke": …}``
(``differing_*``: rows, by id, that differ in any stage up to the filter, or exist in one run
only). ``--smoke`` shrinks the demo to seconds (a 2-step base model in a temporary folder)
and measures nothing.

Run: ``.venv/bin/python benchmarks/reproducibility.py [--smoke]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

KEYS = ("rows", "differing_fresh", "differing_sizes", "hf_batch_invariant", "training_equal",
        "seconds", "smoke")
ROOT = Path(__file__).resolve().parent.parent
STAGES = ("source", "distill", "verify", "filter")
SMOKE = {"source": {"train_per_family": 4, "eval_per_family": 2},
         "build": {"steps": 2, "examples_per_family": 4, "threads": 1},
         "filter": {"samples_per_question": 2, "max_tokens": 16}, "train": {"max_steps": 1}}


def default_recipe() -> dict[str, Any]:
    text = resources.files("dualcurate").joinpath("recipes", "default.toml").read_text("utf-8")
    return tomllib.loads(text)


def recipe_up_to_filter(base_dir: Path, smoke: bool, shard_size: int | None = None,
                        batch_size: int | None = None, train: bool = False) -> dict[str, Any]:
    recipe = default_recipe()
    recipe["models"]["base"]["path"] = str(base_dir)
    if not train:
        recipe.pop("train")
    recipe.pop("judge")
    if smoke:
        recipe["source"].update(SMOKE["source"])
        recipe["models"]["base"]["build"].update(SMOKE["build"])
        recipe["filter"].update(SMOKE["filter"])
        if train:
            recipe["train"].update(SMOKE["train"])
    if shard_size is not None:
        recipe["run"]["shard_size"] = shard_size
    if batch_size is not None:
        recipe["filter"]["engine"]["batch_size"] = batch_size
    return recipe


def run(recipe: dict[str, Any], out: Path) -> float:
    from dualcurate import Pipeline, load_recipe

    started = time.monotonic()
    Pipeline(load_recipe(recipe)).run(out)
    return time.monotonic() - started


def rows_by_id(out: Path) -> dict[str, dict[str, Any]]:
    """Every row of every stage up to the filter, by id: {id: {stage: row}}."""
    from dualcurate.store import RunStore

    store = RunStore(out, create=False)
    found: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        for row in store.dataset(stage).to_list():
            found.setdefault(str(row["id"]), {})[stage] = row
    return found


def differing(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> int:
    return sum(1 for key in a.keys() | b.keys() if a.get(key) != b.get(key))


def hf_batch_invariant(base_dir: Path, rows: list[dict[str, Any]], smoke: bool) -> bool:
    """The filter's own prompts through the hf engine: alone, then batched in reverse order."""
    from dualcurate.chat import ChatRequest
    from dualcurate.sampling import SamplingParams
    from dualcurate_hf.engine import HFEngine

    picked = rows[: 8 if smoke else 48]
    requests = [ChatRequest(messages=[{"role": "user", "content": "Think step by step.\n\n"
                                       + row["question"]}], n=4) for row in picked]
    sampling = SamplingParams(temperature=1.0, max_tokens=16 if smoke else 128, seed=0)
    texts = []
    for batch_size, order in ((1, requests), (16, requests[::-1])):
        engine = HFEngine({"model": str(base_dir), "batch_size": batch_size})
        engine.setup()
        try:
            out = engine.generate(order, sampling)
        finally:
            engine.close()
        if order is not requests:
            out = out[::-1]
        texts.append([[c.text for c in comps] for comps in out])
    return texts[0] == texts[1]


def weights(out: Path) -> dict[str, bytes]:
    from dualcurate.store import RunStore

    artifacts = RunStore(out, create=False).artifacts_dir("train")
    return {str(p.relative_to(artifacts)): p.read_bytes()
            for p in sorted(artifacts.rglob("*.safetensors"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None,
                        help="default runs/reproducibility (--smoke: a temporary folder)")
    parser.add_argument("--smoke", action="store_true",
                        help="the demo shrunk (seconds): checks the script runs, measures nothing")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory() if args.smoke and args.out is None else None
    out = Path(tmp.name) if tmp else Path(args.out or ROOT / "runs" / "reproducibility")
    if out.exists() and not args.smoke:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / ".base" if args.smoke else ROOT / "runs" / ".cache" / "demo-base-seed0"
    seconds: dict[str, float] = {}
    try:
        seconds["fresh"] = run(recipe_up_to_filter(base, args.smoke), out / "fresh")
        seconds["fresh_again"] = run(recipe_up_to_filter(base, args.smoke), out / "again")
        seconds["other_sizes"] = run(recipe_up_to_filter(base, args.smoke, shard_size=100,
                                                         batch_size=16), out / "sizes")
        first = rows_by_id(out / "fresh")
        result: dict[str, Any] = {
            "rows": len(first),
            "differing_fresh": differing(first, rows_by_id(out / "again")),
            "differing_sizes": differing(first, rows_by_id(out / "sizes"))}
        started = time.monotonic()
        source_rows = [r["source"] for r in first.values()]
        result["hf_batch_invariant"] = hf_batch_invariant(base, source_rows, args.smoke)
        seconds["hf_batch_invariant"] = time.monotonic() - started
        trained = []
        for name in ("train_a", "train_b"):
            shutil.copytree(out / "fresh", out / name, ignore=shutil.ignore_patterns("*.lock"))
            seconds[name] = run(recipe_up_to_filter(base, args.smoke, train=True), out / name)
            trained.append(weights(out / name))
        result["training_equal"] = bool(trained[0]) and trained[0] == trained[1]
        result["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
        result["smoke"] = args.smoke
    finally:
        if tmp is not None:
            tmp.cleanup()
    assert tuple(result) == KEYS, (tuple(result), KEYS)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
