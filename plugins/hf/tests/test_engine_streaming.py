"""The hf engine under concurrent generate() calls: one worker owns the model, batches fill
across calls, per-sample seeds, failures and close()."""

from __future__ import annotations

import io
import os
import threading
import time
from typing import Any

import pytest

from dualcurate.chat import ChatRequest, Completion
from dualcurate.errors import DualcurateError
from dualcurate.sampling import SamplingParams
from dualcurate_hf.engine import HFEngine, _Call, _Row

os.environ.setdefault("OMP_NUM_THREADS", "1")

WAIT = 60  # seconds: every wait in these tests is bounded, so a bug fails instead of hanging


def ask(text: str, n: int = 1, **kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
                       n=n, **kwargs)


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class Recorder:
    """Wraps an engine's ``_generate_batch``: records every batch's prompt texts and sampling;
    a batch whose prompt says ``hold`` waits for ``release``; one that says ``explode``
    raises."""

    def __init__(self, engine: HFEngine):
        self.original = engine._generate_batch
        self.batches: list[tuple[list[str], SamplingParams]] = []
        self.held = threading.Event()
        self.release = threading.Event()
        engine._generate_batch = self  # type: ignore[method-assign]

    def __call__(self, prompts, sampling, seeds=None, stop=None) -> list[Completion]:
        texts = [p[0] for p in prompts]
        self.batches.append((texts, sampling))
        if any("hold" in t for t in texts):
            self.held.set()
            assert self.release.wait(WAIT)
        if any("explode" in t for t in texts):
            raise RuntimeError("boom")
        return self.original(prompts, sampling, seeds, stop)


@pytest.fixture
def engine(tiny_lm_dir):
    engine = HFEngine({"model": str(tiny_lm_dir), "batch_size": 4})
    engine.setup()
    yield engine
    engine.close()


def run_in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def hold_worker(engine: HFEngine, recorder: Recorder, sampling: SamplingParams):
    """Keep the worker busy on one held batch, so the next calls' rows queue up together."""
    thread, box = run_in_thread(engine.generate, [ask("hold")], sampling)
    assert recorder.held.wait(WAIT)
    return thread, box


def test_concurrent_calls_share_batches(engine):
    assert engine.concurrent_generate and engine.capacity() == 4
    recorder = Recorder(engine)
    sampling = SamplingParams(max_tokens=4, seed=3)
    holder, _ = hold_worker(engine, recorder, sampling)
    seen: dict[str, list[int]] = {"A": [], "B": []}
    calls = {}
    for name in ("A", "B"):
        requests = [ask(f"{name}0 question"), ask(f"{name}1 question", n=2)]  # 3 rows
        calls[name] = run_in_thread(
            engine.generate, requests, sampling,
            on_result=lambda i, comps, name=name: seen[name].append(i))
    wait_until(lambda: len(engine._queue) == 6, "both calls' rows queued")  # 3 rows each
    recorder.release.set()
    for thread, _ in [*calls.values(), (holder, None)]:
        thread.join(WAIT)
        assert not thread.is_alive()
    for name, (_, box) in calls.items():
        assert "error" not in box, box.get("error")
        assert [len(r) for r in box["result"]] == [1, 2]
        assert all(c.ok for r in box["result"] for c in r)
        assert sorted(seen[name]) == [0, 1]  # on_result once per request
    after_hold = [texts for texts, _ in recorder.batches[1:]]
    assert sorted(len(b) for b in after_hold) == [2, 4]  # 6 rows: a full batch, then the rest
    mixed = [b for b in after_hold
             if any("user\nA" in t for t in b) and any("user\nB" in t for t in b)]
    assert mixed, after_hold  # rows of both calls in one batch


def test_only_rows_with_equal_sampling_share_a_batch(engine):
    recorder = Recorder(engine)
    holder, _ = hold_worker(engine, recorder, SamplingParams(max_tokens=2, seed=0))
    first, second = SamplingParams(max_tokens=3, seed=1), SamplingParams(max_tokens=5, seed=1)
    threads = [run_in_thread(engine.generate, [ask(f"q{i}") for i in range(2)], first),
               run_in_thread(engine.generate, [ask(f"r{i}") for i in range(2)], second)]
    wait_until(lambda: len(engine._queue) == 4, "both calls' rows queued")
    recorder.release.set()
    for thread, box in [*threads, (holder, {})]:
        thread.join(WAIT)
        assert not thread.is_alive() and "error" not in box
    for texts, sampling in recorder.batches[1:]:
        assert len(texts) == 2  # never the 4 rows of two sampling settings in one batch
        assert {"q" if "user\nq" in t else "r" for t in texts} == (
            {"q"} if sampling == first else {"r"})


def test_take_batch_starts_from_the_oldest_row_and_fills_by_length(tiny_lm_dir):
    engine = HFEngine({"model": str(tiny_lm_dir), "batch_size": 2})
    call = _Call(requests=[], sampling=SamplingParams(), prompts=[], results=[], remaining=[])
    lengths = [100, 5, 6, 99, 7]
    engine._queue = [_Row(call, i, 0, 0, "g", length, None, seq=i)
                     for i, length in enumerate(lengths)]
    engine._queue.insert(2, _Row(call, 9, 0, 0, "other", 100, None, seq=9))
    taken = []
    while engine._queue:
        taken.append([r.length for r in engine._take_batch()])
    assert taken == [[100, 99], [5, 6], [100], [7]]


def test_a_sample_does_not_depend_on_its_batch_mates(tiny_lm_dir):
    sampling = SamplingParams(max_tokens=12, seed=5, temperature=1.0)
    question = "Count the red squares."
    engine = HFEngine({"model": str(tiny_lm_dir), "batch_size": 1})
    engine.setup()
    try:
        all_three = engine.generate([ask(question, n=3)], sampling)[0]
        alone = engine.generate([ask(question, sample_indices=[2])], sampling)[0][0]
        with_others = engine.generate([ask("Which option (A) (B)?", n=2),
                                       ask(question, sample_indices=[2])], sampling)[1][0]
    finally:
        engine.close()
    assert len({c.text for c in all_three}) > 1  # the samples do differ
    assert all_three[2].text == alone.text == with_others.text
    # at any batch_size, batched with anything
    wide = HFEngine({"model": str(tiny_lm_dir), "batch_size": 4})
    wide.setup()
    try:
        assert wide.generate([ask(question, sample_indices=[2])], sampling)[0][0].text == alone.text
        mixed = wide.generate([ask("Which option (A) (B)?", n=2), ask(question, n=3)], sampling)
        assert [c.text for c in mixed[1]] == [c.text for c in all_three]
    finally:
        wide.close()


def test_an_exception_in_a_batch_fails_its_rows_not_the_engine(engine):
    recorder = Recorder(engine)
    seen: list[int] = []
    out = engine.generate([ask("explode"), ask("fine", n=2)], SamplingParams(max_tokens=3),
                          on_result=lambda i, comps: seen.append(i))
    assert sorted(seen) == [0, 1]
    assert [len(r) for r in out] == [1, 2]
    for comps in out:
        for comp in comps:
            assert not comp.ok and "RuntimeError: boom" in comp.error
    later = engine.generate([ask("fine")], SamplingParams(max_tokens=3))
    assert later[0][0].ok and later[0][0].completion_tokens >= 1
    assert len(recorder.batches) == 2


def test_close_makes_waiting_calls_raise_and_stops_the_batch(engine):
    entered = threading.Event()
    original = engine._generate_batch
    produced: list[list[Completion]] = []

    def slow(prompts, sampling, seed=None, stop=None):
        entered.set()
        assert stop is not None and stop.wait(WAIT)  # close() is under way
        produced.append(original(prompts, sampling, seed, stop))  # stops at its first token
        return produced[-1]

    engine._generate_batch = slow  # type: ignore[method-assign]
    running = run_in_thread(engine.generate, [ask("first")], SamplingParams(max_tokens=50))
    assert entered.wait(WAIT)
    queued = run_in_thread(engine.generate, [ask("second")], SamplingParams(max_tokens=50))
    wait_until(lambda: len(engine._queue) == 1, "the second call queued")
    engine.close()
    for thread, box in (running, queued):
        thread.join(WAIT)
        assert not thread.is_alive()
        assert isinstance(box.get("error"), DualcurateError)
        assert "closed" in str(box["error"])
    assert produced and all(c.completion_tokens <= 1 for c in produced[0])
    assert engine.model is None and engine._worker is None
    del engine._generate_batch  # the class's method again
    again = engine.generate([ask("after close")], SamplingParams(max_tokens=3))  # reloads
    assert again[0][0].ok


def test_an_unreadable_image_fails_only_its_row(tiny_llava_dir, stage_context):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buf, format="PNG")
    digest = stage_context.images.put(buf.getvalue())
    engine = HFEngine({"model": str(tiny_llava_dir), "batch_size": 2})
    engine.setup(stage_context)
    try:
        out = engine.generate([ChatRequest(messages=[{"role": "user", "content": [
            {"type": "image", "image": d}, {"type": "text", "text": "What colour?"}]}])
            for d in (digest, "0" * 64)], SamplingParams(max_tokens=3, seed=0))
    finally:
        engine.close()
    assert out[0][0].ok
    assert not out[1][0].ok and "cannot read the images" in out[1][0].error
