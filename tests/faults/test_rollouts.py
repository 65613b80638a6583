"""Item 7: k rollouts with a fixed seed are not k copies of one sample, yet a rerun with the
same seed reproduces them: the teacher distiller (hf-distill) and the difficulty filter's
rollouts, both on the tiny LM through the hf engine at temperature 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualcurate import Sample, StageContext

pytestmark = pytest.mark.faults
K = 4
QUESTIONS = ["What is 2 + 3?", "Which shape has three sides?", "Name a primary colour."]


def rows() -> list[dict]:
    return [Sample(source="t", question=q, answer="5").to_row() for q in QUESTIONS]


def distil(tiny_lm_dir: Path, root: Path) -> list[list[str]]:
    from dualcurate_hf.distill import HFDistiller

    ctx = StageContext.ephemeral("distill", root=root)
    stage = HFDistiller({"engine": {"model": str(tiny_lm_dir), "device": "cpu"},
                         "samples_per_question": K, "temperature": 1.0, "top_p": 1.0,
                         "max_tokens": 12, "seed": 1234})
    stage.setup(ctx)
    try:
        out = stage.process(rows(), ctx)
    finally:
        stage.teardown()
        ctx.close()
        ctx.cache.close()
    return [[t["text"] for t in row["traces"]] for row in out]


def test_teacher_samples_differ_and_reproduce(tiny_lm_dir: Path, tmp_path: Path) -> None:
    first = distil(tiny_lm_dir, tmp_path / "a")
    distinct = [len(set(texts)) for texts in first]
    print(f"\nitem 7: hf-distill, k={K}, seed fixed: distinct samples per question {distinct}")
    assert all(len(texts) == K for texts in first)
    assert all(d > 1 for d in distinct)
    assert distil(tiny_lm_dir, tmp_path / "b") == first  # fresh cache: same seed, same samples


def test_difficulty_rollouts_differ(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from dualcurate_difficulty.filter import DifficultyFilter

    ctx = StageContext.ephemeral("filter", root=tmp_path / "run")
    stage = DifficultyFilter({"engine": {"use": "hf", "model": str(tiny_lm_dir), "device": "cpu"},
                              "samples_per_question": K, "adaptive": False, "max_tokens": 12, "seed": 1234,
                              "keep": "pass_rate <= 1", "report": False})
    stage.setup(ctx)
    try:
        out = stage.process(rows(), ctx)
    finally:
        stage.teardown()
        ctx.close()
        ctx.cache.close()
    distinct = [len({r["text"] for r in row["rollouts"]}) for row in out]
    print(f"item 7: difficulty rollouts, k={K}, seed fixed: distinct per question {distinct}")
    assert all(row["pass_drawn"] == K for row in out)
    assert all(d > 1 for d in distinct)
