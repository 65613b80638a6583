"""The openai engine and openai-distill against a real OpenAI-compatible server:
``transformers serve <tiny model dir>`` on 127.0.0.1, started by a fixture."""

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

from dualcurate.chat import ChatRequest
from dualcurate.sampling import SamplingParams
from dualcurate.testing.contracts import default_rows
from dualcurate_openai.distill import OpenAIDistiller
from dualcurate_openai.engine import OpenAIEngine

pytestmark = pytest.mark.slow  # model load + server start: ~20-60 s on a shared 2-core box


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_model(tmp_path_factory) -> Path:
    """The served model ships Qwen2.5-VL-Instruct's sampling defaults in its
    generation_config (top_k = 1, repetition_penalty = 1.05), which a request must override."""
    from transformers import GenerationConfig

    from dualcurate.testing.tiny import build_tiny_causal_lm

    model = build_tiny_causal_lm(tmp_path_factory.mktemp("qwen-like") / "model")
    config = GenerationConfig.from_pretrained(model)
    config.update(do_sample=True, top_k=1, repetition_penalty=1.05)
    config.save_pretrained(model)
    return model


@pytest.fixture(scope="module")
def serve(served_model: Path, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; "
             "sys.argv[0] = 'transformers'; sys.exit(main())",
             "serve", str(served_model), "--host", "127.0.0.1", "--port", str(port),
             "--device", "cpu", "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_engine_against_transformers_serve(serve, served_model):
    engine = OpenAIEngine({"model": str(served_model), "base_url": serve, "max_concurrency": 2,
                           "timeout": 120, "sampling_dialect": "transformers"})
    engine.setup()
    try:
        requests = [ChatRequest(messages=[{"role": "user", "content": f"What is {i} + {i}?"}],
                                n=2) for i in range(2)]
        seen: list[int] = []
        out = engine.generate(requests, SamplingParams(max_tokens=6, seed=1),
                              on_result=lambda i, c: seen.append(i))
    finally:
        engine.close()
    assert sorted(seen) == [0, 1]
    for comps in out:
        for comp in comps:
            assert comp.ok, comp.error
            assert comp.finish_reason in ("stop", "length")
            assert comp.completion_tokens >= 1 and comp.prompt_tokens > 0


def test_distiller_against_transformers_serve_reruns_from_cache(serve, served_model,
                                                                 stage_context):
    config = {"engine": {"use": "openai", "model": str(served_model), "base_url": serve,
                         "timeout": 120, "sampling_dialect": "transformers"},
              "max_tokens": 6, "seed": 0, "samples_per_question": 2}
    rows = default_rows(2)
    stage = OpenAIDistiller(config)
    stage.setup(stage_context)
    out = stage.process(rows, stage_context)
    stage.teardown()
    assert stage_context.stats.sent == 4
    assert all(r["n_traces"] == 2 for r in out)
    again = OpenAIDistiller(config)
    again.setup(stage_context)
    assert again.process(rows, stage_context) == out
    again.teardown()
    assert stage_context.stats.sent == 4  # nothing sent the second time



def test_a_checkpoint_top_k_of_one_does_not_apply(serve, served_model):
    """The samples of a question differ although the checkpoint says top_k = 1: the request
    states every sampling setting."""
    engine = OpenAIEngine({"model": str(served_model), "base_url": serve, "max_concurrency": 2,
                           "timeout": 120, "sampling_dialect": "transformers"})
    engine.setup()
    try:
        out = engine.generate([ChatRequest(messages=[{"role": "user", "content": "Count."}],
                                           n=4)], SamplingParams(max_tokens=8, seed=3))
    finally:
        engine.close()
    assert all(c.ok for c in out[0]), [c.error for c in out[0]]
    assert len({c.text for c in out[0]}) > 1
