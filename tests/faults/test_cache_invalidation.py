"""Item 6: what the request cache keys on, end to end (hf-dataset -> openai-distill ->
rule-verify in one run directory). A change of anything that changes the teacher's output is a
miss (the server sees every request again); a change of the parser or the verifier re-verifies
from the cache (the server sees nothing)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .helpers import base_recipe, rows, run_pipeline, start_server, teacher, write_questions

pytestmark = pytest.mark.faults
N = 12
Recipe = dict[str, Any]


def distill(recipe: Recipe, **options: Any) -> None:
    recipe["distill"].update(options)


def engine(recipe: Recipe, **options: Any) -> None:
    recipe["distill"]["engine"].update(options)


def template(recipe: Recipe, tmp_path: Path) -> None:
    path = tmp_path / "prompt.jinja"
    path.write_text("Solve: {{ question }}\nEnd with <answer>X</answer>.")
    distill(recipe, template=str(path))


MISSES: dict[str, Callable[[Recipe, Path], None]] = {
    "prompt template": template,
    "system prompt": lambda r, _: distill(r, system_prompt="You are a careful teacher."),
    "model": lambda r, _: engine(r, model="teacher-2"),
    "revision": lambda r, _: engine(r, revision="v2"),
    "temperature": lambda r, _: distill(r, temperature=0.7),
    "top_p": lambda r, _: distill(r, top_p=0.5),
    "max_tokens": lambda r, _: distill(r, max_tokens=65),
    "seed": lambda r, _: distill(r, seed=1),
    "stop": lambda r, _: distill(r, stop=["</answer>"]),
    "top_k": lambda r, _: distill(r, top_k=5),
    "min_p": lambda r, _: distill(r, min_p=0.05),
    "repetition_penalty": lambda r, _: distill(r, repetition_penalty=1.05),
    "sampling extra": lambda r, _: distill(r, sampling_extra={"presence_penalty": 0.5}),
}


@pytest.fixture
def server():
    srv = start_server(teacher)
    yield srv
    srv.stop()


@pytest.fixture
def first_run(tmp_path: Path, server) -> tuple[Recipe, Path]:
    recipe = base_recipe(write_questions(tmp_path / "q.jsonl", N), server.base_url)
    run_pipeline(recipe, tmp_path / "run")
    assert server.count == N
    server.reset()
    return recipe, tmp_path / "run"


@pytest.mark.parametrize("change", list(MISSES))
def test_a_change_of_what_the_teacher_sees_is_a_miss(first_run, server, tmp_path: Path,
                                                     change: str) -> None:
    recipe, run_dir = first_run
    changed = copy.deepcopy(recipe)
    MISSES[change](changed, tmp_path)
    log = run_pipeline(changed, run_dir)
    assert server.count == N, change
    assert any(line.startswith("distill: configuration, code, files it reads or upstream changed") for line in log)
    assert any(line.startswith("verify: configuration, code, files it reads or upstream changed") for line in log)
    assert len(rows(run_dir, "verify")) == N


def test_more_samples_per_question_send_only_the_new_samples(first_run, server) -> None:
    recipe, run_dir = first_run
    changed = copy.deepcopy(recipe)
    distill(changed, samples_per_question=3)
    run_pipeline(changed, run_dir)
    assert server.count == 2 * N  # samples 1 and 2; sample 0 is the cached one
    by_question: dict[str, list[int]] = {}
    for seen in server.seen:
        by_question.setdefault(json.dumps(seen.body["messages"]), []).append(seen.body["seed"])
    assert len(by_question) == N  # each new sample has its own seed: its question's base + i
    assert all(sorted(seeds)[1] - sorted(seeds)[0] == 1 for seeds in by_question.values())
    assert len({min(seeds) for seeds in by_question.values()}) == N  # questions differ
    assert all(len(r["traces"]) == 3 for r in rows(run_dir, "verify"))


def test_another_base_url_is_a_miss(first_run, server, tmp_path: Path) -> None:
    recipe, run_dir = first_run
    other = start_server(teacher)
    try:
        changed = copy.deepcopy(recipe)
        engine(changed, base_url=other.base_url)
        run_pipeline(changed, run_dir)
        assert (other.count, server.count) == (N, 0)
    finally:
        other.stop()


def test_runtime_settings_are_not_a_miss(first_run, server) -> None:
    recipe, run_dir = first_run
    changed = copy.deepcopy(recipe)
    engine(changed, max_concurrency=1, timeout=30.0, max_retries=4, http_client="openai-sdk")
    changed["verify"]["workers"] = 2
    log = run_pipeline(changed, run_dir)
    assert server.count == 0
    assert not any("recomputing" in line for line in log)


def test_a_verifier_change_reverifies_without_regenerating(first_run, server) -> None:
    recipe, run_dir = first_run
    before = [t["verdict"] for r in rows(run_dir, "verify") for t in r["traces"]]
    assert before == ["correct"] * N
    changed = copy.deepcopy(recipe)
    changed["verify"]["min_words"] = 50  # every teacher answer is shorter
    log = run_pipeline(changed, run_dir)
    assert server.count == 0
    assert "distill: done already, skipped" in log
    assert any(line.startswith("verify: configuration, code, files it reads or upstream changed") for line in log)
    after = [(t["verdict"], t["label"]) for r in rows(run_dir, "verify") for t in r["traces"]]
    assert after == [("invalid", "too-short")] * N


def test_a_new_verifier_or_parser_version_recomputes_from_the_cache(first_run, server,
                                                                    monkeypatch) -> None:
    """A code change of the verifier or of the distiller's response parser bumps its class
    version: the stage and what follows recompute, every answer comes from the cache."""
    from dualcurate_openai.distill import OpenAIDistiller
    from dualcurate_verify.stage import RuleVerifier

    recipe, run_dir = first_run
    monkeypatch.setattr(RuleVerifier, "version", RuleVerifier.version + ".next")
    log = run_pipeline(recipe, run_dir)
    assert server.count == 0 and "distill: done already, skipped" in log
    assert any(line.startswith("verify: configuration, code, files it reads or upstream changed") for line in log)

    monkeypatch.setattr(OpenAIDistiller, "version", OpenAIDistiller.version + ".next")
    log = run_pipeline(recipe, run_dir)
    assert server.count == 0
    assert any(line.startswith("distill: configuration, code, files it reads or upstream changed") for line in log)
    distilled = rows(run_dir, "distill")
    assert len(distilled) == N and all(r["traces"][0]["answer"] == r["answer"]
                                       for r in distilled)
