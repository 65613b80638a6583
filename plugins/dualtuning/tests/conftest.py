"""Scripted stand-ins for the judge's plumbing tests: an engine whose accuracy per (model,
group, mode) is set by the test, and a trainer that records what it was given.

Questions look like ``[math#3] What is 4 + 5?``: the engine reads the group and the index,
answers correctly for the first ``k`` of every 4 indices (``k`` from its script), and knows the
gold by doing the sum. A model directory the recording trainer wrote lists the groups it saw;
for those groups the engine uses the script's ``trained`` table, else ``base``. A request
with images needs them: the engine reads each through its image resolver, as real engines do,
records its size, mode and colours, and answers wrong when an image is a single colour.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dualcurate import (
    Completion,
    Engine,
    EngineConfig,
    Register,
    Sample,
    Source,
    StageConfig,
    Trace,
    Trainer,
    hookimpl,
)

QUESTION = re.compile(r"\[(?P<group>[\w-]+)#(?P<index>\d+)\] What is (?P<a>\d+) \+ (?P<b>\d+)\?")


class ScriptedEngineConfig(EngineConfig):
    script: dict[str, dict[str, dict[str, int]]] = {}
    fail_groups: list[str] = []
    finish_reason: str = "stop"


class ScriptedEngine(Engine):
    """Answers sums; how many of every 4 it gets right depends on model, group and mode."""

    name = "scripted"
    Config = ScriptedEngineConfig
    calls: list[dict[str, Any]] = []

    def generate(self, requests, sampling, on_result=None):
        trained_on = _trained_groups(self.config.model)
        out = []
        for i, request in enumerate(requests):
            text = " ".join(p["text"] for m in request.messages for p in m["content"]
                            if p.get("type") == "text")
            long_mode = "Think step by step." in text
            match = QUESTION.search(text)
            assert match, f"unexpected prompt {text!r}"
            group, index = match["group"], int(match["index"])
            table = "trained" if group in trained_on else "base"
            k = self.config.script[table][group]["L" if long_mode else "S"]
            gold = int(match["a"]) + int(match["b"])
            images = [_seen(self.image_bytes(p["image"])) for m in request.messages
                      for p in m["content"] if p.get("type") == "image"]
            sighted = not any(len(image["colours"]) == 1 for image in images)
            answer = gold if index % 4 < k and sighted else gold + 1000
            body = f"<answer>{answer}</answer>"
            if long_mode:
                body = f"<think>{match['a']} plus {match['b']}</think>\n{body}"
            type(self).calls.append({"model": self.config.model, "group": group,
                                     "long": long_mode, "temperature": sampling.temperature,
                                     "max_tokens": sampling.max_tokens,
                                     "messages": request.messages, "images": images})
            completions = [Completion(text=body, finish_reason=self.config.finish_reason,
                                      prompt_tokens=5, completion_tokens=3)] * request.n
            if group in self.config.fail_groups:
                completions = [Completion(error="scripted failure")] * request.n
            if on_result:
                on_result(i, completions)
            out.append(completions)
        return out


def _seen(data: bytes) -> dict[str, Any]:
    """What the engine saw of an image: its size, mode and distinct pixel values."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        colours = image.getcolors(maxcolors=1 << 16) or []
        return {"size": image.size, "mode": image.mode,
                "colours": sorted(colour for _, colour in colours)}


def _trained_groups(model: str) -> set[str]:
    marker = Path(model) / "trained.json"
    return set(json.loads(marker.read_text())["groups"]) if marker.is_file() else set()


class RecordingTrainerConfig(StageConfig):
    model: str = ""
    epochs: int = 1


class RecordingTrainer(Trainer):
    """Writes a model dir listing the groups and modes it was trained on."""

    name = "recording"
    Config = RecordingTrainerConfig
    calls: list[dict[str, Any]] = []

    def train(self, dataset, ctx):
        rows = dataset.to_list()
        groups: dict[str, list[str]] = {}
        for row in rows:
            groups.setdefault(row["domain"], [])
            if row["mode"] not in groups[row["domain"]]:
                groups[row["domain"]].append(row["mode"])
        out = ctx.workdir / "model"
        out.mkdir(parents=True, exist_ok=True)
        (out / "trained.json").write_text(json.dumps({"groups": groups}))
        type(self).calls.append({"base": self.config.model, "rows": rows, "workdir": ctx.workdir})
        return out


class SumRowsConfig(StageConfig):
    groups: dict[str, int] = {"math": 8, "spatial": 8}


class SumRowsSource(Source):
    """The rows of :func:`sum_rows` as a source, for recipe-level tests."""

    name = "sum-rows"
    Config = SumRowsConfig

    def read(self, ctx):
        yield sum_rows(self.config.groups)


class ScriptedPlugin:
    @hookimpl
    def dualcurate_register_sources(self, register: Register) -> None:
        register(SumRowsSource)

    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        register(ScriptedEngine)

    @hookimpl
    def dualcurate_register_trainers(self, register: Register) -> None:
        register(RecordingTrainer)


def sum_rows(groups: dict[str, int], traces: bool = True,
             eval_rows: int | None = 4) -> list[dict[str, Any]]:
    """``n`` rows per group, questions the scripted engine understands, each with one
    verified trace (and one wrong one that must never be used). The first ``eval_rows`` of
    each group get ``split = "eval"`` (so the scripted k-of-4 accuracies are exact); None: no
    split column."""
    rows = []
    for group, n in groups.items():
        for i in range(n):
            a, b = i + 1, 2 * i + 3
            row = Sample(source="test", domain=group, question=f"[{group}#{i}] What is {a} + {b}?",
                         answer=str(a + b), answer_type="number").to_row()
            row["traces"] = [
                Trace(text="wrong", reasoning=f"{a} times {b}", answer=str(a * b),
                      verdict="incorrect").model_dump(),
                Trace(text="right", reasoning=f"{a} plus {b} is {a + b}", answer=str(a + b),
                      verdict="correct").model_dump(),
            ] if traces else []
            if eval_rows is not None:
                row["split"] = "eval" if i < eval_rows else "train"
            rows.append(row)
    return rows


@pytest.fixture
def scripted(register_plugin):
    """Registers the scripted engine and recording trainer; resets their call logs."""
    ScriptedEngine.calls = []
    RecordingTrainer.calls = []
    register_plugin(ScriptedPlugin(), name="scripted-test")
    return ScriptedEngine, RecordingTrainer


@pytest.fixture
def make_rows():
    """``make_rows({"math": 8, "spatial": 8})``: rows the scripted engine understands."""
    return sum_rows
