"""examples/recipes/: the papers' setups validate as shipped. Without vllm (the default venv)
the only problem `curate validate` may report is the install hint of a vLLM stage."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "recipes"
NAMES = ["mmfinereason.toml", "openmmreasoner.toml", "dual-tuning.toml"]
VLLM_HINT = "vllm is not installed: pip install 'dualcurate-vllm[vllm]'"


def test_the_three_recipes_are_there():
    assert sorted(p.name for p in RECIPES.glob("*.toml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_validates(name, run_cli):
    result = run_cli("validate", str(RECIPES / name))
    text = " ".join(result.stderr.split())
    if result.exit_code == 0:
        assert f"{name}: ok" in result.stdout
        return
    assert importlib.util.find_spec("vllm") is None, text  # with vllm it must pass outright
    assert result.exit_code == 2, text
    problems = re.findall(r" - \[(\w+)\] (.*?)(?= - \[|$)", text)
    assert problems, text
    for stage, problem in problems:
        # the engine a stage's reference names: "engine: vllm is not installed..."
        problem = re.sub(r"^[\w.\[\]]+: (?=vllm)", "", problem)
        assert problem.startswith(VLLM_HINT), f"[{stage}] {problem}"


@pytest.mark.parametrize("name", NAMES)
def test_recipe_header_says_hardware_and_cost(name):
    text = (RECIPES / name).read_text()
    header = text.split("\n[", 1)[0]
    assert "Hardware this expects" in header and "What a run costs" in header
    assert "GPU-hours" in header or "H100-hours" in header
    tomllib.loads(text)  # and the rest is TOML


def test_docs_link_every_recipe():
    docs = (RECIPES.parents[1] / "docs" / "recipes.md").read_text()
    for name in NAMES:
        assert f"../examples/recipes/{name}" in docs
