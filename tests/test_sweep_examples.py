"""examples/sweeps/: the example sweeps plan and validate as shipped (every variant checked as
`curate validate` would), and docs/sweeps.md documents each."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualcurate.sweep import plan_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "examples" / "sweeps").glob("*.toml"))


def test_there_are_example_sweeps():
    assert {p.name for p in SWEEPS} >= {"less-is-more.toml", "samples-per-question.toml"}


@pytest.mark.parametrize("recipe", SWEEPS, ids=lambda p: p.name)
def test_example_sweep_plans_and_validates(recipe):
    plan = plan_sweep(str(recipe))
    assert len(plan.variants) >= 2
    assert len({v.name for v in plan.variants}) == len(plan.variants)
    docs = (ROOT / "docs" / "sweeps.md").read_text(encoding="utf-8")
    assert f"examples/sweeps/{recipe.name}" in docs


def test_less_is_more_has_the_three_arms():
    plan = plan_sweep(str(ROOT / "examples" / "sweeps" / "less-is-more.toml"))
    arms = [(v.overrides["filter.keep"], v.overrides["subset.rl_subset_size"])
            for v in plan.variants]
    assert ('split == "eval" or pass_rate < 1', 0) in arms  # the hard subset
    assert ("True", 0) in arms                              # the full set
    assert ("True", 28) in arms                             # a random subset of its size
