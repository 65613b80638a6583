"""The teacher's caption pass with its own engine: two engines that load weights in this process
take turns (the caption model is closed before the teacher loads, and the other way round);
an engine that loads nothing here (an HTTP client) stays open beside the other."""

from __future__ import annotations

import threading

import pytest

from dualcurate import Completion, Engine, EngineConfig, Register, hookimpl
from dualcurate.distill import EngineSwitch, TeacherDistiller
from dualcurate.engine import LocalModelConfig
from dualcurate.formats import render_trace


class Recorder:
    """What the engines did, in order, and how many were open at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.open: set[int] = set()
        self.most_open = 0
        #: when set, every caption call waits here until that many are in flight together
        self.caption_gate: threading.Barrier | None = None

    def built(self, engine: Engine) -> None:
        with self.lock:
            self.events.append(("build", engine.config.model))
            self.open.add(id(engine))
            self.most_open = max(self.most_open, len(self.open))

    def closed(self, engine: Engine) -> None:
        with self.lock:
            self.events.append(("close", engine.config.model))
            self.open.discard(id(engine))

    def check_open(self, engine: Engine) -> None:
        with self.lock:
            assert id(engine) in self.open, f"{engine.config.model} used while closed"


RECORDER = Recorder()


class _Answering:
    """Captions are "caption by <model>"; traces answer with the model's name. Calls may
    overlap, as vllm's and hf's do (``concurrent_generate``)."""

    concurrent_generate = True

    def setup(self, ctx=None, resolve_image=None):
        super().setup(ctx, resolve_image)
        RECORDER.built(self)

    def close(self):
        RECORDER.closed(self)
        super().close()

    def generate(self, requests, sampling, on_result=None):
        RECORDER.check_open(self)
        gate = RECORDER.caption_gate
        if gate is not None and requests and requests[0].request_id.startswith("caption:"):
            gate.wait(timeout=30)  # broken (raises) unless every shard captions at once
        out = []
        for i, request in enumerate(requests):
            text = (f"caption by {self.config.model}" if request.request_id.startswith("caption:")
                    else render_trace("thinking", self.config.model))
            comps = [Completion(text=text, finish_reason="stop") for _ in request.indices()]
            if on_result:
                on_result(i, comps)
            out.append(comps)
        return out


class LocalConfig(LocalModelConfig):
    pass


class LocalEngine(_Answering, Engine):
    """Stands for vllm or hf: loads weights in this process."""

    name = "local"
    Config = LocalConfig


class RemoteEngine(_Answering, Engine):
    """Stands for openai: a client of a server elsewhere."""

    name = "remote"
    Config = EngineConfig


class Engines:
    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        register(LocalEngine)
        register(RemoteEngine)


@pytest.fixture
def recorder(register_plugin):
    global RECORDER
    RECORDER = Recorder()
    register_plugin(Engines(), name="turn-engines")
    return RECORDER


def rows(shard: int, n: int = 3) -> list[dict]:
    return [{"id": f"{shard}-{i}", "question": f"q{i}", "images": [f"img{shard}{i}"],
             "split": "train"} for i in range(n)]


def teacher(caption_use: str = "local", caption_model: str = "captioner") -> TeacherDistiller:
    return TeacherDistiller({"engine": {"use": "local", "model": "teacher"},
                             "samples_per_question": 2, "caption_enabled": True,
                             "caption_engine": {"use": caption_use, "model": caption_model}})


def check_shard(out: list[dict], caption_model: str = "captioner") -> None:
    assert [r["caption"] for r in out] == [f"caption by {caption_model}"] * len(out)
    assert all([t["answer"] for t in r["traces"]] == ["teacher"] * 2 for r in out)


def test_the_caption_engine_is_closed_before_the_teacher_loads(recorder, stage_context):
    stage = teacher()
    stage.setup(stage_context)
    try:
        check_shard(stage.process(rows(0), stage_context))
        assert recorder.events == [("build", "captioner"), ("close", "captioner"),
                                   ("build", "teacher")]
        check_shard(stage.process(rows(1), stage_context))  # the next shard: back and forth
        assert recorder.events[3:] == [("close", "teacher"), ("build", "captioner"),
                                       ("close", "captioner"), ("build", "teacher")]
    finally:
        stage.teardown()
    assert recorder.events[-1] == ("close", "teacher") and not recorder.open
    assert recorder.most_open == 1


def test_shards_in_flight_share_each_load_and_never_hold_both(recorder, stage_context):
    stage = teacher()
    stage.setup(stage_context)
    shards = 6
    start = threading.Barrier(shards)
    recorder.caption_gate = threading.Barrier(shards)  # no shard outruns the others
    outputs: dict[int, list[dict]] = {}

    def work(shard: int) -> None:
        start.wait()
        outputs[shard] = stage.process(rows(shard), stage_context.for_shard(shard))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(shards)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    stage.teardown()
    assert sorted(outputs) == list(range(shards))
    for out in outputs.values():
        check_shard(out)
    assert recorder.most_open == 1 and not recorder.open
    builds = [model for kind, model in recorder.events if kind == "build"]
    # a load serves every shard waiting for it: all six caption on one load, then all six
    # distil on one teacher load
    assert builds == ["captioner", "teacher"]


def test_an_engine_that_loads_nothing_here_stays_open_beside_the_teacher(recorder,
                                                                        stage_context):
    stage = teacher(caption_use="remote")
    stage.setup(stage_context)
    check_shard(stage.process(rows(0), stage_context))
    check_shard(stage.process(rows(1), stage_context))
    assert recorder.events == [("build", "captioner"), ("build", "teacher")]
    stage.teardown()
    stage_context.close()
    assert not recorder.open


def test_one_engine_for_both_passes_is_loaded_once(recorder, stage_context):
    stage = teacher(caption_model="teacher")
    stage.setup(stage_context)
    out = stage.process(rows(0), stage_context)
    check_shard(out, caption_model="teacher")
    assert recorder.events == [("build", "teacher")]
    stage.teardown()


def test_a_failed_load_leaves_no_engine_current():
    switch = EngineSwitch()
    closed: list[str] = []

    class Stub:
        def __init__(self, name):
            self.name = name

        def close(self):
            closed.append(self.name)

    def boom():
        raise RuntimeError("no memory")

    first = switch.acquire("a", lambda: Stub("a"))
    switch.release()
    with pytest.raises(RuntimeError, match="no memory"):
        switch.acquire("b", boom)
    assert closed == ["a"]  # closed before the failed load
    again = switch.acquire("a", lambda: Stub("a2"))  # built anew, nothing stale reused
    assert again is not first and again.name == "a2"
    switch.release()
    switch.close()
    assert closed == ["a", "a2"]
