"""Every plugin declares every dualcurate distribution it imports.

A plugin's source (``src/``) is parsed with ``ast``: every import counts, at module level or
inside a function, a ``try`` block or ``if TYPE_CHECKING`` (a plugin that imports another at
all depends on it, and an import that fails only on some code path is a bug a user meets
late). ``dualcurate`` is distribution ``dualcurate``; ``dualcurate_<x>`` is ``dualcurate-<x>``.
Each must be in the pyproject's ``[project] dependencies``. Tests (``tests/``) may import more:
those go in the ``test`` extra and are not checked here.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = [*sorted(p.parent for p in REPO.glob("plugins/*/pyproject.toml")),
           REPO / "examples" / "dualcurate-hello"]


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution a requirement string names (no extras, versions or markers)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot read the requirement {requirement!r}"
    return normalise(match.group(1))


def distribution_of(module: str) -> str | None:
    """``dualcurate`` → ``dualcurate``, ``dualcurate_x`` → ``dualcurate-x``, others None."""
    top = module.split(".")[0]
    if top == "dualcurate":
        return "dualcurate"
    if top.startswith("dualcurate_"):
        return normalise(top.replace("_", "-"))
    return None


def imported_modules(path: Path) -> set[str]:
    """Every absolute module ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def imported_distributions(plugin: Path) -> dict[str, dict[str, str]]:
    """dualcurate distributions the plugin's source imports: ``{distribution: {file: module}}``
    (one module per file, for the message)."""
    own = normalise(tomllib.loads((plugin / "pyproject.toml").read_text())["project"]["name"])
    found: dict[str, dict[str, str]] = {}
    for path in sorted((plugin / "src").rglob("*.py")):
        for module in sorted(imported_modules(path)):
            dist = distribution_of(module)
            if dist is not None and dist != own:
                found.setdefault(dist, {}).setdefault(str(path.relative_to(REPO)), module)
    return found


def declared(plugin: Path) -> set[str]:
    project = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]
    return {requirement_name(r) for r in project.get("dependencies", [])}


def test_the_plugins_are_found() -> None:
    names = {p.name for p in PLUGINS}
    assert {"verify", "trl", "dualtuning", "synthetic", "dualcurate-hello"} <= names


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_every_imported_distribution_is_a_dependency(plugin: Path) -> None:
    missing = {dist: files for dist, files in imported_distributions(plugin).items()
               if dist not in declared(plugin)}
    problems = [
        f"{plugin.relative_to(REPO)}: {file} imports {module}, but {dist!r} is not in "
        f"[project] dependencies of {plugin.relative_to(REPO)}/pyproject.toml; add "
        f'"{dist}" there (or stop importing it)'
        for dist, files in sorted(missing.items()) for file, module in files.items()]
    assert not problems, "\n".join(problems)


def test_the_scan_sees_every_kind_of_import(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import dualcurate.formats\n"
        "if TYPE_CHECKING:\n    from dualcurate_a import X\n"
        "try:\n    import dualcurate_b.c\nexcept ImportError:\n    pass\n"
        "def f():\n    from dualcurate_c import y\n"
        "class K:\n    def m(self):\n        import dualcurate_d as d\n"
        "from . import relative\n")
    dists = {distribution_of(m) for m in imported_modules(source)} - {None}
    assert dists == {"dualcurate", "dualcurate-a", "dualcurate-b", "dualcurate-c",
                     "dualcurate-d"}
    assert requirement_name("dualcurate_hf[extra]>=1.0; python_version>'3'") == "dualcurate-hf"
