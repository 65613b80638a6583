"""The local executor's streaming path: shards of a generating stage run concurrently through
one generation window, are committed in order whatever order they finish in, and the engine
never waits for one shard's slowest request before the next shard's requests arrive."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualcurate.chat import ChatRequest, Completion
from dualcurate.context import StageContext
from dualcurate.engine import Engine, EngineConfig
from dualcurate.executors import LocalExecutor
from dualcurate.sampling import SamplingParams
from dualcurate.stages import Distiller, MapJob, MapStage, StageConfig


class TimedEngine(Engine):
    """Answers each sample after ``delays[question]`` seconds, ``capacity`` at once, shared by
    every generate call (as a server with a concurrency limit). Records when each sample
    started and ended."""

    name = "timed"
    concurrent_generate: ClassVar[bool] = True

    def __init__(self, delays: dict[str, float], capacity: int = 4):
        super().__init__(EngineConfig(model="timed"))
        self.delays = delays
        self.slots = threading.Semaphore(capacity)
        self._capacity = capacity
        self.spans: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()

    def capacity(self) -> int:
        return self._capacity

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: Any = None) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in requests]

        def one(ri: int, request: ChatRequest) -> None:
            question = request.messages[-1]["content"]
            comps = []
            for idx in request.indices():
                with self.slots:
                    start = time.monotonic()
                    time.sleep(self.delays.get(question, 0.0))
                    end = time.monotonic()
                with self.lock:
                    self.spans.append((question, start, end))
                comps.append(Completion(text=f"{question}#{sampling.seed_for(idx, request)}",
                                        completion_tokens=1))
            results[ri] = comps
            if on_result is not None:
                on_result(ri, comps)

        threads = [threading.Thread(target=one, args=(i, r)) for i, r in enumerate(requests)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results


class AskConfig(StageConfig):
    k: int = 1


class Ask(Distiller):
    """A generating stage: one request per row to the engine in ``ENGINE``."""

    name = "ask"
    Config = AskConfig
    generates = True
    ENGINE: ClassVar[Engine | None] = None

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> list[dict[str, Any]]:
        assert self.ENGINE is not None
        requests = [ChatRequest(messages=[{"role": "user", "content": r["question"]}],
                                n=self.config.k) for r in rows]
        results = ctx.generate(self.ENGINE, requests, SamplingParams(seed=3))
        return [{**r, "answers": [c.text for c in comps]} for r, comps in zip(rows, results,
                                                                              strict=True)]


def upstream(ctx: StageContext, sizes: list[int]) -> list[int]:
    """Write upstream shards of the given sizes; return their numbers."""
    assert ctx.store is not None
    n = 0
    for index, size in enumerate(sizes):
        ctx.store.write_shard("src", index, [{"id": f"r{n + i}", "question": f"q{n + i}"}
                                             for i in range(size)])
        n += size
    return list(range(len(sizes)))


def run(stage: MapStage, ctx: StageContext, shards: list[int], commits: list[int] | None = None,
        **options: Any) -> list[int]:
    assert ctx.store is not None
    store = ctx.store
    if commits is not None:
        real = store.commit_staged

        def commit(staged, stage_name, index):  # every earlier shard is visible already
            assert store.finished_shards(stage_name) == sorted(commits)
            commits.append(index)
            return real(staged, stage_name, index)

        store.commit_staged = commit  # type: ignore[method-assign]
    job = MapJob(stage_cls=type(stage), stage_config=stage.config.model_dump(),
                 stage_name="ask", upstream="src", shards=shards, run_dir=str(store.root))
    return [done.index for done in LocalExecutor(options).run_map(job, stage, ctx)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=6),
       delays=st.lists(st.sampled_from([0.0, 0.002, 0.01, 0.03]), min_size=24, max_size=24),
       order=st.randoms(use_true_random=False))
def test_commits_in_order_whatever_order_shards_finish(tmp_path_factory, sizes, delays, order):
    ctx = StageContext.ephemeral(root=tmp_path_factory.mktemp("stream"))
    shards = upstream(ctx, sizes)
    order.shuffle(shards)  # the order the pipeline hands them: also the commit order
    Ask.ENGINE = TimedEngine({f"q{i}": d for i, d in enumerate(delays)}, capacity=3)
    commits: list[int] = []
    done = run(Ask({"k": 2}), ctx, shards, commits)
    assert done == commits == shards
    streamed = [r for i in sorted(shards) for r in ctx.store.read_shard("ask", i).to_pylist()]
    # every row answered exactly once, as one shard at a time would
    assert [r["id"] for r in streamed] == [f"r{i}" for i in range(sum(sizes))]
    request = {r["question"]: ChatRequest(messages=[{"role": "user", "content": r["question"]}])
               for r in streamed}
    assert all(r["answers"] == [f"{r['question']}#{SamplingParams(seed=3).seed_for(i, request[r['question']])}"
                                for i in range(2)] for r in streamed)


def test_next_shard_is_sent_while_a_shard_waits_for_its_slowest_request(tmp_path):
    """Shard 0 has one slow question; shard 1's requests go out before it is answered."""
    ctx = StageContext.ephemeral(root=tmp_path)
    shards = upstream(ctx, [4, 4, 4])
    engine = TimedEngine({"q0": 1.5}, capacity=4)
    for i in range(1, 12):
        engine.delays[f"q{i}"] = 0.01
    Ask.ENGINE = engine
    assert run(Ask(), ctx, shards) == [0, 1, 2]
    spans = {q: (start, end) for q, start, end in engine.spans}
    slow_end = spans["q0"][1]
    later = [start for q, (start, _) in spans.items() if q in {f"q{i}" for i in range(4, 12)}]
    assert all(start < slow_end for start in later)  # no barrier at the shard boundary


def test_a_failing_shard_stops_the_stage_and_keeps_what_was_committed(tmp_path):
    class Boom(Ask):
        def process(self, rows, ctx):
            if rows[0]["id"] == "r4":  # shard 2
                raise ValueError("bad row r4")
            return super().process(rows, ctx)

    ctx = StageContext.ephemeral(root=tmp_path)
    shards = upstream(ctx, [2, 2, 2, 2])
    engine = TimedEngine({}, capacity=2)
    Boom.ENGINE = engine
    with pytest.raises(ValueError, match="bad row r4"):
        run(Boom(), ctx, shards)
    committed = ctx.store.finished_shards("ask")
    assert 2 not in committed and committed == sorted(committed)
    assert committed == list(range(len(committed)))  # a prefix: in order
    folder = ctx.store.stage_dir("ask")  # absent when shard 2 failed before any was staged
    assert not folder.exists() or not [p for p in folder.iterdir()
                                       if p.name.startswith(".tmp-")]


class Count(MapStage):
    """A stage that does not generate: records how many process() calls overlap."""

    name = "count"
    active = 0
    most = 0
    lock = threading.Lock()

    def process(self, rows, ctx):
        with Count.lock:
            Count.active += 1
            Count.most = max(Count.most, Count.active)
        time.sleep(0.01)
        with Count.lock:
            Count.active -= 1
        return rows


def test_a_stage_that_does_not_generate_runs_one_shard_at_a_time(tmp_path):
    ctx = StageContext.ephemeral(root=tmp_path)
    shards = upstream(ctx, [2, 2, 2])
    assert run(Count(), ctx, shards) == [0, 1, 2]
    assert Count.most == 1


class Serial(TimedEngine):
    """An engine that cannot take concurrent calls: core must serialise them."""

    concurrent_generate: ClassVar[bool] = False
    calls = 0
    most = 0

    def generate(self, requests, sampling, on_result=None):
        with self.lock:
            Serial.calls += 1
            Serial.most = max(Serial.most, Serial.calls)
        try:
            return super().generate(requests, sampling, on_result)
        finally:
            with self.lock:
                Serial.calls -= 1


def test_an_engine_without_concurrent_generate_gets_one_call_at_a_time(tmp_path):
    ctx = StageContext.ephemeral(root=tmp_path)
    shards = upstream(ctx, [3, 3, 3, 3])
    Ask.ENGINE = Serial({f"q{i}": 0.005 for i in range(12)}, capacity=4)
    assert run(Ask(), ctx, shards) == shards
    assert Serial.most == 1


def test_max_shards_in_flight_bounds_the_shards_held(tmp_path):
    ctx = StageContext.ephemeral(root=tmp_path)
    shards = upstream(ctx, [1] * 8)
    engine = TimedEngine({f"q{i}": 0.02 for i in range(8)}, capacity=64)
    Ask.ENGINE = engine
    assert run(Ask(), ctx, shards, max_shards_in_flight=2) == shards
    events = sorted([(s, 1) for _, s, _ in engine.spans] + [(e, -1) for _, _, e in engine.spans])
    level = most = 0
    for _, step in events:
        level += step
        most = max(most, level)
    assert most <= 2


@given(running=st.sets(st.integers(0, 7), max_size=6), engaged=st.sets(st.integers(0, 7)),
       reserved=st.integers(0, 3), limit=st.integers(1, 8), generating=st.booleans(),
       capacity=st.integers(0, 4), outstanding=st.integers(0, 20))
def test_the_admission_rule_both_executors_follow(running, engaged, reserved, limit, generating,
                                                  capacity, outstanding):
    from dualcurate.window import GenerationWindow

    window = GenerationWindow(depth=3)
    window.engaged, window.capacity, window.outstanding = set(engaged), capacity, outstanding
    admitted = window.may_admit(running, reserved, limit, generating)
    busy = len(running) + reserved
    if busy >= limit:
        assert not admitted  # never more than the limit
    elif busy == 0 or not generating:
        assert admitted  # the first shard always; CPU stages up to the limit
    else:  # a shard still preparing (or a place reserved for one) holds the next one back
        preparing = reserved > 0 or not running <= engaged
        assert admitted == (not preparing and capacity > 0 and outstanding < 3 * capacity)
