"""One phase at a time: each evaluation engine is closed before the next one is built, and a
training run's trainer and model are gone (GPU cache emptied) before the evaluation engine of
the model it trained loads."""

from __future__ import annotations

import gc
import weakref

import datasets
import pytest

from dualcurate import Register, hookimpl, rows_to_table
from dualcurate_dualtuning.judge import DualTuningJudge

SCRIPT = {"base": {"math": {"S": 2, "L": 2}, "spatial": {"S": 2, "L": 1}},
          "trained": {"math": {"S": 1, "L": 4}, "spatial": {"S": 4, "L": 2}}}


class _Weights:
    """What a trainer holds while it trains: it points back at the trainer, as a real model,
    optimizer and trainer do, so dropping the last reference does not free it."""

    def __init__(self, owner):
        self.owner = owner


@pytest.fixture
def phased(scripted, register_plugin, monkeypatch):
    """The scripted engine and recording trainer, recording when each engine is built and
    closed, when a trainer finished and when its model was freed, and each GPU cache
    emptying. Automatic garbage collection is off, so only an explicit collect frees the
    trainer's cycle."""
    torch = pytest.importorskip("torch")
    engine_cls, trainer_cls = scripted
    events: list[tuple[str, str]] = []

    class PhasedEngine(engine_cls):
        name = "phased"

        def setup(self, ctx=None, resolve_image=None):
            super().setup(ctx, resolve_image)
            events.append(("build", self.config.model))

        def close(self):
            events.append(("close", self.config.model))
            super().close()

    class PhasedTrainer(trainer_cls):
        name = "phased-trainer"

        def train(self, dataset, ctx):
            out = super().train(dataset, ctx)
            self.weights = _Weights(self)
            weakref.finalize(self.weights, events.append, ("freed", str(out)))
            events.append(("trained", str(out)))
            return out

    class PhasedPlugin:
        @hookimpl
        def dualcurate_register_engines(self, register: Register) -> None:
            register(PhasedEngine)

        @hookimpl
        def dualcurate_register_trainers(self, register: Register) -> None:
            register(PhasedTrainer)

    register_plugin(PhasedPlugin(), name="phased-test")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append(("empty_cache", "")))
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield events
    finally:
        if enabled:
            gc.enable()


def run_judge(stage_context, rows, **overrides):
    judge = DualTuningJudge({"base_model": "base-model",
                             "engine": {"use": "phased", "script": SCRIPT},
                             "trainer": "phased-trainer",
                             "eval_fraction": 0.5, **overrides})
    return judge.run(datasets.Dataset(rows_to_table(rows)), stage_context)


def check_one_phase_at_a_time(events: list[tuple[str, str]]) -> None:
    """No engine is built while another is open or while a finished trainer's model is
    alive, and the GPU cache is emptied between a phase's end and the next engine."""
    open_engines: set[str] = set()
    alive: set[str] = set()
    emptied = True
    for kind, what in events:
        if kind == "build":
            assert not open_engines, f"{what} built while {open_engines} open: {events}"
            assert not alive, f"{what} built while the trainer of {alive} is alive: {events}"
            assert emptied, f"{what} built before the GPU cache was emptied: {events}"
            open_engines.add(what)
        elif kind == "close":
            open_engines.discard(what)
            emptied = False
        elif kind == "trained":
            alive.add(what)
            emptied = False
        elif kind == "freed":
            alive.discard(what)
        elif kind == "empty_cache":
            emptied = True
    assert not open_engines and not alive, events


def test_the_trainer_is_released_before_the_evaluation_engine_loads(phased, stage_context,
                                                                   make_rows):
    result = run_judge(stage_context, make_rows({"math": 8, "spatial": 8}))
    dual = result.artifacts["model"]
    assert phased == [("build", "base-model"), ("close", "base-model"), ("empty_cache", ""),
                      ("trained", dual), ("freed", dual), ("empty_cache", ""),
                      ("build", dual), ("close", dual), ("empty_cache", "")]


def test_validation_mode_holds_one_model_at_a_time(phased, stage_context, make_rows):
    result = run_judge(stage_context, make_rows({"math": 8, "spatial": 8}), validate=True)
    trained = [what for kind, what in phased if kind == "trained"]
    assert len(trained) >= 3  # the dual model and the validation models
    assert {what for kind, what in phased if kind == "build"} >= {
        "base-model", result.artifacts["model"]}
    check_one_phase_at_a_time(phased)

