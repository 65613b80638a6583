"""Every script in benchmarks/ runs at smoke size and prints its keys.

Each ``benchmarks/NAME.py`` (a name not starting with ``_``; found by globbing, so a new script
is checked without being listed here) declares at module level ``KEYS = (...)``, the keys of
the JSON object its last stdout line prints, ``"smoke"`` among them, and takes ``--smoke``
(tiny sizes, seconds; its figures are not measurements). The scripts assert before printing
that the object has exactly ``KEYS``, so a full run prints the same keys as the smoke run.

A script that declares ``NEEDS = ("module", ...)`` runs its smoke only where those modules
import; elsewhere it must stop with a non-zero exit naming the missing module (it still has to
accept ``--smoke``). vllm_overhead.py needs vllm: ``make test-bench-vllm`` runs its smoke in
.venv-vllm. The static checks here run in the default suite; the smoke runs are marked
``bench`` (``make test-bench``).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
SMOKE_TIMEOUT_S = 600  # one script's smoke run (most take seconds; vllm's starts vLLM thrice)


def declared(path: Path, name: str) -> tuple[str, ...] | None:
    """The literal tuple a script assigns to ``name`` at module level (None when absent)."""
    for node in ast.parse(path.read_text(), str(path)).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, tuple) and all(isinstance(v, str) for v in value), (
                f"{path.name}: {name} must be a literal tuple of strings, not {value!r}")
            return value
    return None


def test_the_known_scripts_are_found():
    names = {p.name for p in SCRIPTS}
    assert {"store.py", "distill_overhead.py", "demo_seeds.py", "vllm_overhead.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_declares_keys_and_takes_smoke(script):
    keys = declared(script, "KEYS")
    assert keys, (f"benchmarks/{script.name}: declare KEYS = (...) at module level, the keys of "
                  "the JSON object its last line prints (CONTRIBUTING.md, Benchmarks)")
    assert "smoke" in keys, (f"benchmarks/{script.name}: KEYS must include \"smoke\" (true in "
                             "--smoke runs, so their figures are never taken for measurements)")
    assert len(set(keys)) == len(keys), f"benchmarks/{script.name}: KEYS repeats a key"
    assert "--smoke" in script.read_text(), (
        f"benchmarks/{script.name}: takes no --smoke (tiny sizes, seconds) for make test-bench")


def _smoke(script: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), "--smoke"], cwd=ROOT, text=True,
                          capture_output=True, timeout=SMOKE_TIMEOUT_S, check=False)


@pytest.mark.bench
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_smoke_run_prints_its_keys(script):
    keys = declared(script, "KEYS")
    assert keys, f"benchmarks/{script.name}: no KEYS (see test_declares_keys_and_takes_smoke)"
    missing = [m for m in declared(script, "NEEDS") or () if importlib.util.find_spec(m) is None]
    proc = _smoke(script)
    tail = f"\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert "unrecognized arguments: --smoke" not in proc.stderr, (
        f"benchmarks/{script.name} does not take --smoke{tail}")
    if missing:  # it cannot run here: it must say so, naming what is missing
        assert proc.returncode != 0, f"{script.name} ran without {missing}{tail}"
        assert all(m in proc.stderr for m in missing), (
            f"{script.name} failed without naming {missing}{tail}")
        return
    assert proc.returncode == 0, f"benchmarks/{script.name} --smoke failed{tail}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"benchmarks/{script.name} --smoke printed nothing{tail}"
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"benchmarks/{script.name}: the last line is not JSON: {lines[-1][:300]!r}")
    assert isinstance(result, dict), f"{script.name}: the last line is not one JSON object"
    assert set(result) == set(keys), (
        f"benchmarks/{script.name}: keys printed {sorted(result)} differ from KEYS: missing "
        f"{sorted(set(keys) - set(result))}, extra {sorted(set(result) - set(keys))}")
    assert result["smoke"] is True, f"{script.name} --smoke printed smoke = {result['smoke']!r}"
