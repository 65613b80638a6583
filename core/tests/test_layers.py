"""The core is layered: every module imports (at module level or inside a function) only
modules of its own layer or below, and no import cycle exists. docs/architecture.md draws the
same layers; a new module goes into one of them here."""

from __future__ import annotations

import ast
from pathlib import Path

import dualcurate

ROOT = Path(dualcurate.__file__).parent

#: lowest first
LAYERS: list[set[str]] = [
    # foundations: no dualcurate imports but each other's
    {"errors", "kinds", "hookspecs", "formats", "schema", "fingerprint", "progress", "quiet",
     "window", "sampling", "chat"},
    # recipes and the typed schema of their options, the run store, what a plugin adds to a
    # report
    {"recipe", "store", "manifest", "report_sections", "export_extras"},
    # engines, the request cache (its file, its segments, generating through it), the plugin
    # host
    {"engine", "cache", "cache_segments", "plugins"},
    # what a stage gets while it runs
    {"context"},
    # stage base classes
    {"stages"},
    # core's own components: executors, model builders, the teacher distiller
    {"executors", "models", "distill"},
    {"builtins"},
    # what users call: pipeline, reports, exports, the CLI, the testing kit
    {"pipeline", "report", "export", "export_formats", "hub", "docgen", "sweep",
     "sweep_report", "cli", "testing", "testing.contracts", "testing.plugin", "testing.tiny",
     "testing.fake_hub"},
    {"__init__"},
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def runtime_imports(path: Path) -> set[str]:
    """dualcurate modules ``path`` imports at run time (module level or in functions; not
    under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "dualcurate":
                found.update(a.name for a in node.names)
            elif node.module.startswith("dualcurate."):
                found.add(node.module.removeprefix("dualcurate."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dualcurate."):
                    found.add(alias.name.removeprefix("dualcurate."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for dep in runtime_imports(path):
            # "from dualcurate import stages" names a module; "from dualcurate import Stage"
            # names the package's re-export (the top layer)
            deps.add(dep if dep in modules else "__init__")
        out[name] = deps - {name}
    return out


def layer_of(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if module in layer:
            return i
    raise AssertionError(f"core module dualcurate.{module} is in no layer; add it to LAYERS in "
                         f"{__file__} and to docs/architecture.md")


def test_every_module_has_a_layer():
    for module in graph():
        layer_of(module)


def test_imports_go_down_the_layers():
    wrong = [f"dualcurate.{m} (layer {layer_of(m)}) imports dualcurate.{d} (layer "
             f"{layer_of(d)})" for m, deps in graph().items() for d in deps
             if layer_of(d) > layer_of(m)]
    assert not wrong, "imports that go up a layer:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                walk(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            walk(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_function_level_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from dualcurate.pipeline import Pipeline\n"
                      "def f():\n    from dualcurate.context import StageContext\n"
                      "    import dualcurate.store\n")
    assert runtime_imports(module) == {"context", "store"}
