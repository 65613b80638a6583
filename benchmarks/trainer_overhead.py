"""Overhead of the ``sft`` and ``gspo`` trainer stages over TRL called directly.

Same tiny model, same examples, same settings; repetitions interleaved (alternating which side
goes first) so machine noise hits both sides alike. Step time = the median time between
consecutive step starts (forward, backward, optimiser, generation and rewards for
GSPO, callbacks and logging), measured by one callback installed in every Trainer as process
CPU time (robust on a shared machine; ``--clock wall`` for wall time); the ratio compares the
medians of all steps of all repetitions (GSPO: of generation cycles, per step). The end-to-end wall time (examples, model load, training, saving the
model dir, the curve) is printed too, for information.

Run: ``.venv/bin/python benchmarks/trainer_overhead.py [--reps 7]``. Last line: JSON with
``sft_step_ratio`` and ``gspo_step_ratio`` (stage / direct; target ≤ 1.05), plus the ratio
of the best runs and end-to-end wall ratios.

``--smoke``: one repetition of 2 steps each, no warm-up, seconds; checks that the script runs
and prints its keys (``make test-bench``), its figures are not measurements.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

KEYS = ("sft_step_ratio_best_run", "sft_step_ratio", "sft_wall_ratio",
        "gspo_step_ratio_best_run", "gspo_step_ratio", "gspo_wall_ratio", "reps", "clock",
        "smoke")
SFT_STEPS = 40
GSPO_STEPS = 20
COMMON = {"learning_rate": 1e-3, "per_device_train_batch_size": 4, "seed": 0,
          "gradient_accumulation_steps": 1}
GSPO = {"num_generations": 4, "max_completion_length": 24, "steps_per_generation": 2}


def _train_args(output_dir: Path, steps: int) -> dict[str, Any]:
    return {"output_dir": str(output_dir), "max_steps": steps, "logging_steps": 1,
            "save_strategy": "steps", "save_steps": 500, "save_total_limit": 2,
            "report_to": [], "push_to_hub": False, "disable_tqdm": True, "bf16": False,
            "fp16": False, "use_cpu": True, "gradient_checkpointing": False, **COMMON}


class StepTimer(TrainerCallback):
    """Installed in every Trainer through transformers' default callbacks, so both sides get
    it alike: records the time between consecutive step starts, i.e. the whole step (forward,
    backward, optimiser, generation and rewards for GSPO, callbacks and logging), without model
    loading, data preparation or the final save."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.last_end = 0.0
        # CPU time of this process: on a shared machine other processes' load barely moves
        # it, where wall time swings by tens of percent (--clock wall to use wall time).
        self.clock = time.process_time

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.starts = []

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self.starts.append(self.clock())

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.last_end = self.clock()

    def step_times(self, cycle: int = 1) -> list[float]:
        """Per-step times of the last run, averaged over cycles of ``cycle`` steps (GSPO
        generates every ``steps_per_generation`` steps, so one cycle holds one generation)."""
        ends = [*self.starts[1:], self.last_end]
        steps = [b - a for a, b in zip(self.starts, ends, strict=True)]
        return [sum(steps[i:i + cycle]) / cycle for i in range(0, len(steps) - cycle + 1, cycle)]


TIMER = StepTimer()


def _runtime(cycle: int = 1) -> list[float]:
    return TIMER.step_times(cycle)


# sft --------------------------------------------------------------------------------------------

def sft_stage(model: Path, rows: list[dict], work: Path) -> tuple[list[float], float]:
    from dualcurate import StageContext
    from dualcurate_trl.sft import SFTStage
    from dualcurate_trl.toy import to_hf

    ctx = StageContext.ephemeral(stage_name="sft", root=work)
    start = time.perf_counter()
    SFTStage({"model": str(model), "mode": "long", "max_steps": SFT_STEPS, "max_length": 1024,
              "trl_args": {"gradient_checkpointing": False}, **COMMON}).train(to_hf(rows), ctx)
    wall = time.perf_counter() - start
    return _runtime(), wall


def sft_direct(model: Path, rows: list[dict], work: Path) -> tuple[list[float], float]:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from dualcurate.formats import render_trace

    start = time.perf_counter()
    examples = [{"prompt": [{"role": "user", "content": r["question"]}],
                 "completion": [{"role": "assistant",
                                 "content": render_trace(t["reasoning"], t["answer"])}]}
                for r in rows for t in r["traces"]]
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model), processing_class=AutoTokenizer.from_pretrained(model),
        train_dataset=datasets.Dataset.from_list(examples),
        args=SFTConfig(**_train_args(work / "out", SFT_STEPS), max_length=1024,
                       completion_only_loss=True))
    trainer.train()
    trainer.save_model(str(work / "model"))
    wall = time.perf_counter() - start
    return _runtime(), wall


# gspo -------------------------------------------------------------------------------------------

def gspo_stage(model: Path, rows: list[dict], work: Path) -> tuple[list[float], float]:
    from dualcurate import StageContext
    from dualcurate_trl.grpo import GSPOStage
    from dualcurate_trl.toy import answer_tag_check, to_hf

    ctx = StageContext.ephemeral(stage_name="gspo", root=work)
    start = time.perf_counter()
    GSPOStage({"model": str(model), "max_steps": GSPO_STEPS, "system_prompt": None,
               "trl_args": {"gradient_checkpointing": False}, **COMMON, **GSPO},
              check=answer_tag_check).train(to_hf(rows), ctx)
    wall = time.perf_counter() - start
    return _runtime(GSPO["steps_per_generation"]), wall


def accuracy(prompts, completions, answer, **_):
    from dualcurate_trl.toy import answer_tag_check

    return [1.0 if answer_tag_check(a, c[0]["content"]).verdict == "correct" else 0.0
            for c, a in zip(completions, answer, strict=True)]


def fmt(prompts, completions, **_):
    from dualcurate_trl.rewards import format_score

    return [format_score(c[0]["content"]) for c in completions]


def gspo_direct(model: Path, rows: list[dict], work: Path) -> tuple[list[float], float]:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    start = time.perf_counter()
    examples = [{"prompt": [{"role": "user", "content": r["question"]}], "answer": r["answer"],
                 "question": r["question"]} for r in rows]
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    args = GRPOConfig(**_train_args(work / "out", GSPO_STEPS), **GSPO,
                      importance_sampling_level="sequence", loss_type="grpo", beta=0.0,
                      epsilon=3e-4, epsilon_high=4e-4, reward_weights=[0.9, 0.1],
                      temperature=1.0, top_p=1.0, use_vllm=False)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model),
                          reward_funcs=[accuracy, fmt], args=args,
                          train_dataset=datasets.Dataset.from_list(examples),
                          processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(work / "model"))
    wall = time.perf_counter() - start
    return _runtime(GSPO["steps_per_generation"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="step time as process CPU time (default) or wall time")
    parser.add_argument("--smoke", action="store_true",
                        help="1 repetition of 2 steps (seconds): checks the script runs, "
                             "measures nothing")
    opts = parser.parse_args()
    if opts.smoke:
        global SFT_STEPS, GSPO_STEPS
        SFT_STEPS = GSPO_STEPS = 2
        opts.reps = 1

    import torch
    import transformers.trainer

    from dualcurate.testing.tiny import build_tiny_causal_lm
    from dualcurate_trl.toy import arithmetic_rows

    torch.set_num_threads(1)
    transformers.trainer.DEFAULT_CALLBACKS.append(TIMER)
    if opts.clock == "wall":
        TIMER.clock = time.perf_counter
    tmp = tempfile.TemporaryDirectory(prefix="trainer-overhead-")
    root = Path(tmp.name)
    model = build_tiny_causal_lm(root / "model")
    rows = arithmetic_rows(16)
    pairs = {"sft": (sft_stage, sft_direct), "gspo": (gspo_stage, gspo_direct)}
    times: dict[str, dict[str, list[tuple[list[float], float]]]] = {
        k: {"stage": [], "direct": []} for k in pairs}
    # warm-up (imports, first-call caches) on both sides, not timed
    for name, (stage_fn, direct_fn) in ({} if opts.smoke else pairs).items():
        stage_fn(model, rows, root / f"warm-{name}-s")
        direct_fn(model, rows, root / f"warm-{name}-d")
    for rep in range(opts.reps):
        for name, (stage_fn, direct_fn) in pairs.items():
            order = [("stage", stage_fn), ("direct", direct_fn)]
            if rep % 2:
                order.reverse()
            for side, fn in order:
                times[name][side].append(fn(model, rows, root / f"{name}-{side}-{rep}"))

    result: dict[str, Any] = {}
    for name in pairs:
        sides = ("stage", "direct")
        step = {s: statistics.median(x for t in times[name][s] for x in t[0]) for s in sides}
        wall = {s: statistics.median(t[1] for t in times[name][s]) for s in sides}
        best = {s: min(statistics.median(t[0]) for t in times[name][s]) for s in sides}
        ratio = step["stage"] / step["direct"]
        n = len(times[name]["stage"][0][0]) * opts.reps
        print(f"{name:5s} step (median of {n}): stage {step['stage'] * 1000:7.1f} ms  "
              f"direct {step['direct'] * 1000:7.1f} ms  ratio {ratio:.3f}  (best run: "
              f"{best['stage'] / best['direct']:.3f})  | end-to-end: stage "
              f"{wall['stage']:.2f} s  direct {wall['direct']:.2f} s  ratio "
              f"{wall['stage'] / wall['direct']:.3f}")
        result[f"{name}_step_ratio_best_run"] = round(best["stage"] / best["direct"], 4)
        result[f"{name}_step_ratio"] = round(ratio, 4)
        result[f"{name}_wall_ratio"] = round(wall["stage"] / wall["direct"], 4)
    result["reps"] = opts.reps
    result["clock"] = opts.clock
    result["smoke"] = opts.smoke
    tmp.cleanup()
    assert set(result) == set(KEYS), sorted(set(result) ^ set(KEYS))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
