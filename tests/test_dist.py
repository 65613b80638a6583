"""`make dist` for real: a wheel of every distribution, installed alone into a fresh venv (no
editable paths, no checkout on sys.path), and `curate plugins` lists every plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def distribution_dirs() -> list[Path]:
    """What `make dist` builds: core, every plugins/*, examples/dualcurate-hello."""
    plugins = sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml"))
    return [ROOT / "core", *plugins, ROOT / "examples" / "dualcurate-hello"]


def entry_point_names(project: Path) -> set[str]:
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    return set(meta.get("entry-points", {}).get("dualcurate", {}))


def test_make_dist_builds_every_distribution():
    makefile = (ROOT / "Makefile").read_text()
    assert "DIST_DIRS := core $(PLUGIN_DIRS) examples/dualcurate-hello" in makefile
    assert "pip wheel" in makefile.replace("$(PIP) wheel", "pip wheel")


@pytest.mark.slow
def test_wheels_install_alone_and_list_every_plugin(tmp_path):
    wheels = tmp_path / "dist"
    for project in distribution_dirs():  # as `make dist` does
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", str(wheels), str(project)],
                       check=True, cwd=tmp_path)
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == len(distribution_dirs())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [str(py), "-m", "pip", "install", "-q"]
    # torch first (the local CPU wheel), then the wheels; pip resolves the rest
    subprocess.run([*pip, "torch==2.13.0"], check=True, env=env, cwd=tmp_path)
    subprocess.run([*pip, "--find-links", str(wheels), *map(str, built)], check=True,
                   env=env, cwd=tmp_path)

    listed = subprocess.run([str(py), "-m", "pip", "list", "--editable", "--format", "json"],
                            check=True, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert json.loads(listed.stdout) == []
    where = subprocess.run([str(py), "-c", "import dualcurate, dualcurate.recipe as r; "
                            "print(dualcurate.__file__); print(r.load_recipe(None).run.name)"],
                           check=True, env=env, cwd=tmp_path, capture_output=True, text=True)
    location, default_name = where.stdout.split()
    assert Path(location).is_relative_to(venv), location
    assert default_name == "demo"  # the embedded default recipe shipped as package data

    out = subprocess.run([str(venv / "bin" / "curate"), "plugins", "--json"], check=True,
                         env=env, cwd=tmp_path, capture_output=True, text=True)
    infos = {i["name"]: i for i in json.loads(out.stdout)}
    expected = set().union(*(entry_point_names(p) for p in distribution_dirs()))
    assert expected <= set(infos), sorted(expected - set(infos))
    for name in expected:
        assert infos[name]["error"] is None, (name, infos[name]["error"])
        assert infos[name]["version"], name
