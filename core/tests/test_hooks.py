"""One test per hook (each hook reaches the registry of its kind), plus datasette-style
meta-tests keeping docs/plugin-hooks.md and this file honest."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import click
import pytest

from dualcurate import hookimpl, hookspecs
from dualcurate.plugins import KIND_HOOKS
from dualcurate.stages import (
    Distiller,
    EfficacyJudge,
    Executor,
    Filter,
    Source,
    Trainer,
    Verifier,
)

ROOT = Path(__file__).parents[2]
HOOK_NAMES = sorted(n for n, _ in inspect.getmembers(hookspecs, inspect.isfunction)
                    if n.startswith("dualcurate_"))


def _register_one(plugin_host, register_plugin, hook: str, base: type):
    cls = type(f"Probe{base.__name__}", (base,), {"name": f"probe-{hook}"})

    class P:
        pass

    def impl(self, register):
        register(cls)

    setattr(P, hook, hookimpl(impl))
    register_plugin(P(), name=f"probe-{hook}")
    kind = next(k for k, h in KIND_HOOKS.items() if h == hook)
    assert plugin_host.get(kind, f"probe-{hook}") is cls
    assert plugin_host.stage_kinds_of(f"probe-{hook}") == {kind: [f"probe-{hook}"]}


def test_hook_dualcurate_register_sources(plugin_host, register_plugin):
    _register_one(plugin_host, register_plugin, "dualcurate_register_sources", Source)


def test_hook_dualcurate_register_distillers(plugin_host, register_plugin):
    _register_one(plugin_host, register_plugin, "dualcurate_register_distillers", Distiller)


def test_hook_dualcurate_register_verifiers(plugin_host, register_plugin):
    _register_one(plugin_host, register_plugin, "dualcurate_register_verifiers", Verifier)


def test_hook_dualcurate_register_filters(plugin_host, register_plugin):
    _register_one(plugin_host, register_plugin, "dualcurate_register_filters", Filter)


def test_hook_dualcurate_register_trainers(plugin_host, register_plugin):
    _register_one(plugin_host, register_plugin, "dualcurate_register_trainers", Trainer)


def test_hook_dualcurate_register_efficacy_judges(plugin_host, register_plugin):
    _register_one(plugin_host, register_plugin, "dualcurate_register_efficacy_judges",
                  EfficacyJudge)


def test_hook_dualcurate_register_engines(plugin_host, register_plugin):
    from dualcurate import Engine

    _register_one(plugin_host, register_plugin, "dualcurate_register_engines", Engine)


def test_hook_dualcurate_register_executors(plugin_host, register_plugin):
    _register_one(plugin_host, register_plugin, "dualcurate_register_executors", Executor)


def test_hook_dualcurate_register_commands(plugin_host, register_plugin):
    class P:
        @hookimpl
        def dualcurate_register_commands(self, cli):
            @cli.command("probe-cmd")
            def probe():
                click.echo("probed")

    register_plugin(P(), name="cmd")

    @click.group()
    def group():
        pass

    plugin_host.register_commands(group)
    assert "probe-cmd" in group.commands


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_a_test(hook):
    tree = ast.parse(Path(__file__).read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert f"test_hook_{hook}" in names


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_is_documented_with_its_signature(hook):
    docs = (ROOT / "docs" / "plugin-hooks.md").read_text()
    func = getattr(hookspecs, hook)
    source = inspect.getsource(func)
    signature = re.search(r"def (.+?) -> None:", source, re.S).group(1)
    assert f"{signature} -> None" in docs, f"docs/plugin-hooks.md lacks `{signature}`"
    first_line = inspect.getdoc(func).splitlines()[0]
    assert first_line in docs


def test_every_kind_has_a_hook():
    assert set(KIND_HOOKS.values()) <= set(HOOK_NAMES)
