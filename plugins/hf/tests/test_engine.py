"""The hf engine with tiny local models (a Qwen2 text model and a LLaVA), images from the
run's image store."""

from __future__ import annotations

import io
import os

import pytest
from pydantic import ValidationError

from dualcurate.chat import ChatRequest
from dualcurate.errors import DualcurateError
from dualcurate.sampling import SamplingParams
from dualcurate.testing.contracts import EngineContract
from dualcurate_hf import plugin
from dualcurate_hf.engine import HFEngine

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def text_engine(tiny_lm_dir):
    engine = HFEngine({"model": str(tiny_lm_dir), "batch_size": 4})
    engine.setup()
    yield engine
    engine.close()


def ask(text: str, n: int = 1, **kwargs) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
                       n=n, **kwargs)


class TestHFEngineContract(EngineContract):
    engine_cls = HFEngine
    plugin = plugin.hf_engine

    @pytest.fixture(autouse=True)
    def _model(self, tiny_lm_dir):
        self.model_dir = tiny_lm_dir

    def make_engine(self) -> HFEngine:
        return HFEngine({"model": str(self.model_dir), "batch_size": 4})


def test_loads_text_models_as_causal_lm(text_engine):
    assert not text_engine.is_vlm
    assert type(text_engine.model).__name__ == "Qwen2ForCausalLM"
    assert text_engine.tokenizer.padding_side == "left"


def test_length_finish_and_token_counts(text_engine):
    out = text_engine.generate([ask("What is 2 + 2?", n=2)],
                               SamplingParams(max_tokens=3, seed=0, temperature=1.0))
    for comp in out[0]:
        assert comp.ok
        assert 1 <= comp.completion_tokens <= 3
        assert comp.finish_reason == ("length" if comp.completion_tokens == 3 else "stop")
        assert comp.prompt_tokens > 5


def test_seeded_samples_differ_and_reproduce(text_engine):
    requests = [ask("Count the red squares."), ask("Which option (A) (B)?", n=3)]
    sampling = SamplingParams(max_tokens=12, seed=7)
    first = text_engine.generate(requests, sampling)
    again = text_engine.generate(requests, sampling)
    assert [[c.text for c in r] for r in first] == [[c.text for c in r] for r in again]
    assert len({c.text for c in first[1]}) > 1
    other = text_engine.generate(requests, SamplingParams(max_tokens=12, seed=8))
    assert [[c.text for c in r] for r in other] != [[c.text for c in r] for r in first]


def test_greedy_is_deterministic_across_batching(tiny_lm_dir):
    requests = [ask(f"What is {i} + {i}?") for i in range(5)]
    sampling = SamplingParams(max_tokens=6, temperature=0.0)
    texts = []
    for batch_size in (1, 5):
        engine = HFEngine({"model": str(tiny_lm_dir), "batch_size": batch_size})
        engine.setup()
        texts.append([r[0].text for r in engine.generate(requests, sampling)])
        engine.close()
    assert texts[0] == texts[1]  # left padding does not change what a row generates


def test_on_result_once_per_request(text_engine):
    seen: list[int] = []
    out = text_engine.generate([ask("a", n=2), ask("bb", n=1), ask("ccc", n=3)],
                               SamplingParams(max_tokens=2, seed=1),
                               on_result=lambda i, comps: seen.append(i))
    assert sorted(seen) == [0, 1, 2]
    assert [len(r) for r in out] == [2, 1, 3]


def test_stop_strings_end_generation(text_engine):
    out = text_engine.generate([ask("Say anything", n=2)],
                               SamplingParams(max_tokens=30, seed=2, stop=[" "]))
    for comp in out[0]:
        assert " " not in comp.text
        assert comp.finish_reason == "stop" or comp.completion_tokens == 30


def test_text_model_rejects_images(text_engine, stage_context):
    text_engine.resolve_image = stage_context.images.get
    request = ChatRequest(messages=[{"role": "user", "content": [
        {"type": "image", "image": "0" * 64}, {"type": "text", "text": "?"}]}])
    with pytest.raises(DualcurateError, match="text-only"):
        text_engine.generate([request], SamplingParams(max_tokens=2))


def test_llava_with_images_from_the_store(tiny_llava_dir, stage_context):
    from PIL import Image

    digests = []
    for colour in ("red", "blue"):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(buf, format="PNG")
        digests.append(stage_context.images.put(buf.getvalue()))
    engine = HFEngine({"model": str(tiny_llava_dir), "batch_size": 2})
    engine.setup(stage_context)
    try:
        assert engine.is_vlm
        requests = [ChatRequest(messages=[{"role": "user", "content": [
            {"type": "image", "image": d}, {"type": "text", "text": "What colour?"}]}], n=2)
            for d in digests]
        requests.append(ask("No image here"))
        out = engine.generate(requests, SamplingParams(max_tokens=4, seed=0))
    finally:
        engine.close()
    assert [len(r) for r in out] == [2, 2, 1]
    for comps in out:
        for comp in comps:
            assert comp.ok and comp.completion_tokens >= 1
    # the image tokens are part of the prompt: an image request has a longer prompt
    assert out[0][0].prompt_tokens > out[2][0].prompt_tokens


def test_trust_remote_code_needs_a_pinned_revision(tmp_path):
    with pytest.raises(ValidationError, match="commit"):
        HFEngine({"model": "org/model", "trust_remote_code": True, "revision": "main"})
    HFEngine({"model": "org/model", "trust_remote_code": True, "revision": "a" * 40})
    HFEngine({"model": str(tmp_path), "trust_remote_code": True})  # local code is on disk


def test_missing_model_is_a_clear_error(tmp_path):
    engine = HFEngine({"model": str(tmp_path / "nope")})
    with pytest.raises(DualcurateError, match="cannot load model"):
        engine.setup()


def test_identity():
    assert HFEngine({"model": "m", "revision": "r"}).identity() == {
        "model": "m", "revision": "r", "endpoint": None}
