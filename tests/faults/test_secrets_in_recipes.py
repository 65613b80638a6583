"""Item 13, the other way a key travels: pasted into a recipe. The most common mistakes (an
``api_key`` option, the key itself in ``api_key_env``) must be refused without the error
repeating the key, and the key must never reach ``manifest.json``."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import SECRET

pytestmark = pytest.mark.faults


def recipe(tmp_path: Path, distill: str = "", engine: str = "") -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(f"""
[source]
use = "hello"
n = 2
[distill]
use = "openai-distill"
{distill}
[distill.engine]
model = "teacher"
base_url = "http://127.0.0.1:9/v1"
max_retries = 0
{engine}
""")
    return path


def test_an_api_key_option_in_the_engine_is_refused_without_echo(run_cli, tmp_path):
    result = run_cli("validate", str(recipe(tmp_path, engine=f'api_key = "{SECRET}"')))
    assert result.exit_code == 2
    assert "api_key" in result.stderr and SECRET not in result.stdout + result.stderr


def test_an_api_key_option_on_the_stage_is_refused_without_echo(run_cli, tmp_path):
    result = run_cli("validate", str(recipe(tmp_path, distill=f'api_key = "{SECRET}"')))
    assert result.exit_code == 2
    assert "api_key" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_key_given_as_api_key_env_is_refused_and_never_stored(run_cli, tmp_path):
    result = run_cli("run", str(recipe(tmp_path, engine=f'api_key_env = "{SECRET}"')),
                     "--out", "out")
    manifest = result.cwd / "out" / "manifest.json"
    assert not (manifest.exists() and SECRET in manifest.read_text())
    assert result.exit_code == 2 and "api_key_env" in result.stderr
    assert SECRET not in result.stdout + result.stderr
