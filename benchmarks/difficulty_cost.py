"""What adaptive sampling saves in the difficulty filter, and whether it changes any decision.

Data: the ``synthetic`` source's train puzzles (colour-ops, nth-colour, last-shape), with the
caption in the question (the proxy reads text). Proxy: the text-only variant of the synthetic
plugin's tiny base model (``vision = false``: a Qwen2 from config that reads the caption,
faster than the demo's Idefics3 and all this benchmark needs, since it measures the filter's
sampling, not perception; briefly pre-trained on freshly drawn puzzles, built once under
``runs/.cache``),
sampled at temperature 1.0 through the real ``hf`` engine, verified by
``dualcurate_verify.check``. With ``--proxy scripted`` (or when those plugins are missing) a
scripted engine answers instead, with per-sample success probabilities drawn U-shaped.

For each rule (``pass_rate == 0``, ``pass_rate < 1``, and a band with the predictive stop):

1. adaptive (round size 1) on a fresh request cache: rollouts drawn, seconds;
2. full k on the same cache: its first rollouts of every sample are the adaptive ones (same
   sample indices, same cache keys), so the decisions are compared on the very same rollouts.

Printed per rule: rollouts used as a ratio of full k (target <= 0.6 for == 0 and < 1; for
== 0 no exact rule goes below the share of samples that never pass, each of which needs all k),
decision agreement with full k (must be 1.0 for the exact rules, >= 0.98 for the band), and
wall time. Last line: one JSON object.

Run: .venv/bin/python benchmarks/difficulty_cost.py [--per-family N] [--k K] [--proxy hf|scripted]
[--smoke]

``--smoke``: 2 puzzles per family, k=4, a proxy pre-trained for 2 steps in a temporary folder
(the cache under runs/ is left alone), seconds; checks that the script runs and prints its keys
(``make test-bench``), its figures are not measurements.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

KEYS = ("rollout_ratio_eq0", "rollout_ratio_lt1", "agreement_eq0", "agreement_lt1",
        "rollout_ratio_band", "agreement_band", "samples", "k", "proxy", "smoke")
ROOT = Path(__file__).resolve().parent.parent
RULES = {"eq0": {"keep": "pass_rate == 0"},
         "lt1": {"keep": "pass_rate < 1"},
         "band": {"keep": "band", "band": (0.25, 0.75), "stop_rule": "predictive"}}


def synthetic_rows(per_family: int, ctx: Any) -> list[dict[str, Any]]:
    from dualcurate_synthetic.source import SyntheticSource

    source = SyntheticSource({"train_per_family": per_family, "eval_per_family": 0,
                              "caption_in_question": True, "seed": 1})
    return [row for batch in source.read(ctx) for row in batch]


def build_proxy(steps: int, smoke_dir: Path | None = None) -> Path:
    """The synthetic demo's base model, text-only (``synthetic-base`` with ``vision = false``),
    built once under runs/.cache (``smoke_dir``: a barely trained one, built there)."""
    from dualcurate import StageContext
    from dualcurate.models import ensure_model
    from dualcurate_synthetic.base_model import SyntheticBaseBuilder

    if smoke_dir is not None:
        builder = SyntheticBaseBuilder({"vision": False, "steps": steps,
                                        "examples_per_family": 4, "threads": 1})
        model_dir = smoke_dir
    else:
        builder = SyntheticBaseBuilder({"vision": False, "steps": steps, "threads": 1})
        model_dir = ROOT / "runs" / ".cache" / f"difficulty-proxy-{steps}-seed0"
    started = time.monotonic()
    print(f"proxy model: {model_dir} (built once; cached)", flush=True)
    ctx = StageContext.ephemeral("models.proxy")
    ensure_model("proxy", model_dir, builder, ctx, log=lambda m: print(m, flush=True))
    ctx.close()
    ctx.cache.close()
    print(f"proxy model {model_dir} ready in {time.monotonic() - started:.1f} s", flush=True)
    return model_dir


def host_with(proxy: str) -> Any:
    from dualcurate import PluginHost
    from dualcurate_difficulty.scripted import scripted_host

    if proxy == "scripted":
        return scripted_host()
    host = PluginHost(autoload=False)
    host.load("hf")
    return host


def run_rule(name: str, rows: list[dict[str, Any]], base: dict[str, Any],
             proxy: str) -> dict[str, Any]:
    from dualcurate import StageContext
    from dualcurate_difficulty.filter import DifficultyFilter
    from dualcurate_difficulty.scripted import scripted_check

    with tempfile.TemporaryDirectory(prefix="bench-difficulty-") as root:
        ctx = StageContext.ephemeral(root=root, host=host_with(proxy))
        results = {}
        for mode, adaptive in (("adaptive", True), ("full", False)):
            stage = DifficultyFilter({**base, **RULES[name], "adaptive": adaptive,
                                      "report": False})
            if proxy == "scripted":
                stage.check_fn = scripted_check
            sent_before = ctx.stats.sent
            started = time.monotonic()
            stage.setup(ctx)
            out = stage.process([dict(r) for r in rows], ctx)
            stage.teardown()
            results[mode] = {"rows": out, "seconds": time.monotonic() - started,
                             "generated": ctx.stats.sent - sent_before}
        ctx.close()
        ctx.cache.close()
    k = base["samples_per_question"]
    adaptive, full = results["adaptive"], results["full"]
    used = sum(r["pass_drawn"] for r in adaptive["rows"])
    agree = sum(a["keep"] == f["keep"] for a, f in zip(adaptive["rows"], full["rows"],
                                                     strict=True))
    return {"ratio": used / (k * len(rows)), "agreement": agree / len(rows),
            "kept": sum(r["keep"] for r in full["rows"]),
            "adaptive_s": adaptive["seconds"], "rest_of_full_s": full["seconds"],
            "full_pass_rates": [r["pass_rate"] for r in full["rows"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-family", type=int, default=40)
    parser.add_argument("--k", type=int, default=8, help="the filter's samples_per_question")
    parser.add_argument("--steps", type=int, default=300, help="proxy pre-training steps")
    parser.add_argument("--proxy", choices=["hf", "scripted"], default="hf")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (seconds): checks the script runs, measures nothing")
    args = parser.parse_args()
    if args.smoke:
        args.per_family, args.k, args.steps = 2, 4, 2

    from dualcurate import StageContext

    proxy = args.proxy
    try:
        import dualcurate_hf.engine  # noqa: F401
        import dualcurate_synthetic.base_model  # noqa: F401
    except ImportError as exc:
        print(f"hf engine or synthetic source missing ({exc}); using the scripted proxy")
        proxy = "scripted"
    data_ctx = StageContext.ephemeral(root=tempfile.mkdtemp(prefix="bench-difficulty-data-"))
    rows = synthetic_rows(args.per_family, data_ctx)
    base: dict[str, Any] = {"samples_per_question": args.k, "temperature": 1.0,
                            "max_tokens": 16, "seed": 0, "include_images": False,
                            "template": "Answer directly.\n\n{{ question }}"}
    if proxy == "hf":
        smoke_dir = None
        if args.smoke:
            smoke_dir = Path(tempfile.mkdtemp(prefix="bench-difficulty-proxy-"))
            atexit.register(shutil.rmtree, smoke_dir, ignore_errors=True)
        model_dir = build_proxy(args.steps, smoke_dir and smoke_dir / "proxy")
        base.update(engine={"use": "hf", "model": str(model_dir), "batch_size": 64})
    else:
        from dualcurate_difficulty.scripted import scripted_options

        rng = random.Random(0)
        probabilities = [rng.choice([0.0, 0.0, 1.0, 1.0, rng.random()]) for _ in rows]
        base.update(engine={"use": "scripted",
                            **scripted_options(rows, probabilities=probabilities)})
    print(f"{len(rows)} samples ({args.per_family} per family), k={args.k}, proxy={proxy}")

    figures: dict[str, Any] = {}
    for name in RULES:
        res = run_rule(name, rows, base, proxy)  # text-only proxy: images not needed
        figures[name] = res
        print(f"{name:5s} {RULES[name]['keep']:15s} rollouts {res['ratio']:.3f} of full k, "
              f"agreement {res['agreement']:.4f}, kept {res['kept']}/{len(rows)}, "
              f"adaptive {res['adaptive_s']:.1f} s, rest of full k {res['rest_of_full_s']:.1f} s")
    rates = figures["eq0"]["full_pass_rates"]
    hist = {f"{b}/{args.k}": sum(1 for r in rates if round(r * args.k) == b)
            for b in range(args.k + 1)}
    print(f"full-k pass-rate histogram: {hist}")
    result = {
        "rollout_ratio_eq0": round(figures["eq0"]["ratio"], 4),
        "rollout_ratio_lt1": round(figures["lt1"]["ratio"], 4),
        "agreement_eq0": round(figures["eq0"]["agreement"], 4),
        "agreement_lt1": round(figures["lt1"]["agreement"], 4),
        "rollout_ratio_band": round(figures["band"]["ratio"], 4),
        "agreement_band": round(figures["band"]["agreement"], 4),
        "samples": len(rows), "k": args.k, "proxy": proxy, "smoke": args.smoke,
    }
    assert set(result) == set(KEYS), sorted(set(result) ^ set(KEYS))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
