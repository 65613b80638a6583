"""No import cycles inside core or inside any plugin (issue 26): every import counts, the ones
inside functions too (a function-level import is how a cycle hides); imports under
``if TYPE_CHECKING:`` do not (they never run).

A module's package ``__init__`` is an edge like any other: ``from dualcurate import hookspecs``
in ``dualcurate.plugins`` makes ``dualcurate`` (whose ``__init__`` imports ``plugins``) part of a
cycle, while ``import dualcurate.hookspecs`` names the submodule only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "core" / "src", *sorted((ROOT / "plugins").glob("*/src"))]


def module_files(src: Path) -> dict[str, Path]:
    out = {}
    for path in src.rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(source: str, module: str, is_package: bool) -> set[str]:
    """Every module name ``source`` (the text of ``module``) may import at run time: the
    imported module and, for ``from M import x``, ``M.x`` (x may be a submodule)."""
    tree = ast.parse(source)
    skipped = {id(n) for node in ast.walk(tree)
               if isinstance(node, ast.If) and _type_checking(node.test)
               for stmt in node.body for n in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def import_graph(src: Path) -> dict[str, set[str]]:
    files = module_files(src)
    return {name: {dep for dep in imported(path.read_text(), name, path.name == "__init__.py")
                   if dep in files and dep != name}
            for name, path in files.items()}


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.parent.name)
def test_no_import_cycles(src):
    found = cycles(import_graph(src))
    assert not found, "import cycles (function-level imports count): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_the_check_finds_a_function_level_cycle():
    graph = {"p.a": imported("def f():\n    from p.b import g\n", "p.a", False),
             "p.b": imported("from p import a\n", "p.b", False), "p": set()}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    assert cycles(graph) == [["p.a", "p.b"]]
    hidden = imported("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import p.b\n",
                      "p.a", False)
    assert "p.b" not in hidden


@given(st.dictionaries(st.sampled_from("abcdef"), st.sets(st.sampled_from("abcdef")),
                       min_size=1))
def test_cycles_are_the_nontrivial_strongly_connected_components(edges):
    graph = {n: set() for n in "abcdef"}
    for node, deps in edges.items():
        graph[node] = deps - {node}

    def reach(a):
        seen, todo = set(), [a]
        while todo:
            for b in graph[todo.pop()]:
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    found = cycles(graph)
    members = [m for c in found for m in c]
    assert len(members) == len(set(members))  # components are disjoint
    for c in found:
        assert all(b in reach(a) for a in c for b in c)  # strongly connected
    expected = {a for a in graph if a in reach(a)}  # on some cycle
    assert set(members) == expected
