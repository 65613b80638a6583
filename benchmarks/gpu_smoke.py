"""GPU smoke: what only a real accelerator shows, on a tiny VLM saved like Qwen2.5-VL.

For when a GPU machine is lent (its image has torch, transformers, peft and accelerate; TRL
travels as a wheel; nothing can be downloaded there, so no vLLM and no hub checkpoint): a tiny
LLaVA (``dualcurate.testing.tiny.build_tiny_llava``) saved in bfloat16 with a Qwen-like
generation config (``top_k=1``, ``top_p=0.001``, ``temperature=0.1``,
``repetition_penalty=1.05``), then

* the ``hf`` engine on the device: several samples per question at T = 1 must differ (the
  checkpoint's near-greedy generation config must not leak into sampling);
* a few ``sft`` and ``gspo`` steps at learning rate 1e-6 on the colour data set: the dtype of
  the trainable parameters (float32 master weights, bf16 compute on a GPU that has it), whether
  the weights moved from the bf16 checkpoint, and the step time against TRL called directly
  with the same model, data and TRL config.

Device: ``cuda`` when available, else ``cpu`` (the benchmark smoke step runs it on CPU until a
GPU is lent). Imports only torch, transformers, peft, accelerate, trl and the project's
packages. Run: ``.venv/bin/python benchmarks/gpu_smoke.py [--smoke]``; last line: one JSON
object (``device``, ``hf_distinct_completions``, ``param_dtype``, ``weights_changed_lr1e6``,
``sft_step_ratio``, ``gspo_step_ratio``, ...).
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

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

KEYS = ("device", "hf_device", "hf_samples_per_question", "hf_distinct_completions",
        "sft_param_dtype", "sft_weights_changed_fraction", "sft_step_ms", "sft_direct_step_ms",
        "sft_step_ratio", "gspo_param_dtype", "gspo_weights_changed_fraction", "gspo_step_ms",
        "gspo_direct_step_ms", "gspo_step_ratio", "param_dtype", "weights_changed_lr1e6",
        "smoke")
QWEN_LIKE = {"top_k": 1, "top_p": 0.001, "temperature": 0.1, "repetition_penalty": 1.05,
             "do_sample": True}
LR = 1e-6


class StepTimer:
    """A TrainerCallback (made in :func:`step_timer`) in every Trainer: wall time between
    consecutive step starts (the whole step), and the dtypes of the trainable parameters."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.last_end = 0.0
        self.dtypes: set[str] = set()

    def reset(self) -> None:
        self.starts, self.dtypes = [], set()

    def step_times(self, cycle: int = 1) -> list[float]:
        ends = [*self.starts[1:], self.last_end]
        steps = [b - a for a, b in zip(self.starts, ends, strict=True)]
        return [sum(steps[i:i + cycle]) / cycle for i in range(0, len(steps) - cycle + 1, cycle)]


def step_timer(timer: StepTimer) -> Any:
    import torch
    from transformers import TrainerCallback

    def now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    class Callback(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs) -> None:
            timer.reset()
            if model is not None:
                timer.dtypes = {str(p.dtype).removeprefix("torch.")
                                for p in model.parameters() if p.requires_grad}

        def on_step_begin(self, args, state, control, **kwargs) -> None:
            timer.starts.append(now())

        def on_step_end(self, args, state, control, **kwargs) -> None:
            timer.last_end = now()

    return Callback()


def build_model(root: Path) -> Path:
    """The tiny LLaVA, saved in bfloat16 with a Qwen-like generation config."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from dualcurate.testing.tiny import build_tiny_llava

    src = build_tiny_llava(root / "fp32", image_size=32, patch_size=8)
    out = root / "bf16"
    model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch.bfloat16)
    model.generation_config.update(**QWEN_LIKE)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(src).save_pretrained(out)
    return out


def hf_distinct(model: Path, n: int) -> tuple[float, str]:
    """Mean number of distinct completions among ``n`` samples per question at T = 1."""
    from dualcurate.chat import ChatRequest
    from dualcurate.sampling import SamplingParams
    from dualcurate_hf.engine import HFEngine

    engine = HFEngine({"model": str(model), "batch_size": 8})
    engine.setup()
    try:
        questions = ["What is the colour?", "What is 2 + 2?", "Name a shape.", "Count to 3."]
        requests = [ChatRequest(messages=[{"role": "user", "content": [
            {"type": "text", "text": q}]}], n=n) for q in questions]
        results = engine.generate(requests, SamplingParams(temperature=1.0, top_p=1.0,
                                                           max_tokens=12, seed=0))
        device = str(engine.device)
    finally:
        engine.close()
    return statistics.mean(len({c.text for c in r}) for r in results), device


def changed_fraction(before_dir: Path, after_dir: Path) -> float:
    """Fraction of the checkpoint's tensors whose values moved."""
    from safetensors.torch import load_file

    before = load_file(before_dir / "model.safetensors")
    after = load_file(after_dir / "model.safetensors")
    return sum(not before[k].float().equal(after[k].float()) for k in before) / len(before)


# one run of each side ---------------------------------------------------------------------------

def sft_stage(model: Path, work: Path, steps: int) -> tuple[Path, Any]:
    from dualcurate import StageContext
    from dualcurate_trl.sft import SFTStage
    from dualcurate_trl.toy import colour_rows, to_hf

    ctx = StageContext.ephemeral(stage_name="sft", root=work)
    stage = SFTStage({"model": str(model), "mode": "short", "max_steps": steps,
                      "learning_rate": LR, "per_device_train_batch_size": 4,
                      "trl_args": {"gradient_checkpointing": False}})
    rows = to_hf(colour_rows(ctx))
    return stage.train(rows, ctx), (stage, stage.prepare(rows, ctx, vision=True))


def sft_direct(model: Path, work: Path, stage: Any, dataset: Any) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32),
        processing_class=AutoProcessor.from_pretrained(model), train_dataset=dataset,
        args=stage.trl_config(work))
    _train_quietly(trainer)


def _train_quietly(trainer: Any) -> None:
    """Train without the console printer (the stages log to JSONL instead)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()


def gspo_stage(model: Path, work: Path, steps: int) -> tuple[Path, Any]:
    from dualcurate import StageContext
    from dualcurate_trl.grpo import GSPOStage
    from dualcurate_trl.toy import colour_rows, to_hf

    ctx = StageContext.ephemeral(stage_name="gspo", root=work)
    stage = GSPOStage({"model": str(model), "max_steps": steps, "learning_rate": LR,
                       "num_generations": 4, "per_device_train_batch_size": 4,
                       "max_completion_length": 16, "use_vllm": False,
                       "trl_args": {"gradient_checkpointing": False}}, check=checksum_check)
    rows = to_hf(colour_rows(ctx))
    return stage.train(rows, ctx), (stage, stage.prepare(rows, ctx, vision=True))


def checksum_check(gold: str, response: str, question: str | None = None) -> Any:
    """A verifier stand-in whose verdict varies between rollouts of an untrained model (the
    parity of the response's code points), so advantages are non-zero and weights move."""
    from types import SimpleNamespace

    return SimpleNamespace(verdict="correct" if sum(map(ord, response)) % 2 else "incorrect")


def _accuracy(prompts, completions, answer, **_):
    from dualcurate_trl.rewards import completion_text

    return [1.0 if checksum_check(a, completion_text(c)).verdict == "correct" else 0.0
            for c, a in zip(completions, answer, strict=True)]


def _format(prompts, completions, **_):
    from dualcurate_trl.rewards import completion_text, format_score

    return [format_score(completion_text(c)) for c in completions]


def gspo_direct(model: Path, work: Path, stage: Any, dataset: Any) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOTrainer

    trainer = GRPOTrainer(
        model=AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32),
        reward_funcs=[_accuracy, _format], args=stage.trl_config(work),
        train_dataset=dataset, processing_class=AutoProcessor.from_pretrained(model))
    _train_quietly(trainer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="few steps, one repetition")
    parser.add_argument("--reps", type=int, default=3)
    opts = parser.parse_args()
    reps = 1 if opts.smoke else opts.reps
    sft_steps, gspo_steps = (4, 4) if opts.smoke else (30, 20)

    import torch
    import transformers.trainer

    timer = StepTimer()
    transformers.trainer.DEFAULT_CALLBACKS.append(step_timer(timer))
    tmp = tempfile.TemporaryDirectory(prefix="gpu-smoke-")
    root = Path(tmp.name)
    model = build_model(root)
    result: dict[str, Any] = {"device": "cuda" if torch.cuda.is_available() else "cpu"}
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name(0)

    distinct, engine_device = hf_distinct(model, n=4)
    result.update(hf_device=engine_device, hf_samples_per_question=4,
                  hf_distinct_completions=distinct)
    print(f"hf engine on {engine_device}: {distinct:.2f} distinct of 4 samples per question")

    for name, stage_fn, direct_fn, cycle in (("sft", sft_stage, sft_direct, 1),
                                              ("gspo", gspo_stage, gspo_direct, 2)):
        steps = sft_steps if name == "sft" else gspo_steps
        times: dict[str, list[float]] = {"stage": [], "direct": []}
        # warm-up of both sides (first-call allocations, kernels), not timed
        _, (stage, dataset) = stage_fn(model, root / f"{name}-warm", 2)
        direct_fn(model, root / f"{name}-warm-d", stage, dataset)
        for rep in range(reps):
            model_dir, (stage, dataset) = stage_fn(model, root / f"{name}-s{rep}", steps)
            times["stage"] += timer.step_times(cycle)
            if rep == 0:
                result[f"{name}_param_dtype"] = sorted(timer.dtypes)
                result[f"{name}_weights_changed_fraction"] = round(
                    changed_fraction(model, model_dir), 4)
            direct_fn(model, root / f"{name}-d{rep}", stage, dataset)
            times["direct"] += timer.step_times(cycle)
        step = {side: statistics.median(t) for side, t in times.items()}
        result[f"{name}_step_ms"] = round(step["stage"] * 1000, 2)
        result[f"{name}_direct_step_ms"] = round(step["direct"] * 1000, 2)
        result[f"{name}_step_ratio"] = round(step["stage"] / step["direct"], 4)
        print(f"{name}: step stage {step['stage'] * 1000:.1f} ms, direct "
              f"{step['direct'] * 1000:.1f} ms (ratio {result[f'{name}_step_ratio']:.3f}); "
              f"trainable {result[f'{name}_param_dtype']}; tensors moved at lr {LR}: "
              f"{result[f'{name}_weights_changed_fraction']:.0%}")
    dtypes = {d for k in ("sft", "gspo") for d in result[f"{k}_param_dtype"]}
    result["param_dtype"] = dtypes.pop() if len(dtypes) == 1 else sorted(dtypes)
    result["weights_changed_lr1e6"] = all(result[f"{k}_weights_changed_fraction"] > 0.5
                                          for k in ("sft", "gspo"))
    result["smoke"] = opts.smoke
    tmp.cleanup()
    assert tuple(result) == KEYS, (tuple(result), KEYS)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
