"""Plugin host: loading by entry-point name, broken plugins, selection, typed registry."""

from __future__ import annotations

import importlib.metadata as md

import pytest

from dualcurate import PluginHost, UnknownComponentError
from dualcurate.errors import DualcurateError

from .conftest import CorePlugin, CountingSource


def broken_entry_points(real):
    def fake():
        eps = dict(real())
        eps["broken"] = md.EntryPoint(name="broken", value="dualcurate_no_such_module:plugin",
                                      group="dualcurate")
        return eps
    return fake


def test_builtins_are_a_plugin():
    host = PluginHost(autoload=False)
    infos = {i.name: i for i in host.plugin_infos(include_unloaded=False)}
    assert infos["builtins"].registers == {"executor": ["local"], "distiller": ["teacher"]}
    assert infos["builtins"].distribution == "dualcurate"
    assert "local" in host.names("executor")


def test_autoload_off_loads_only_named(monkeypatch):
    host = PluginHost(autoload=False, select=["hello"])
    assert set(host.infos) == {"builtins", "hello"}
    assert host.names("source") == ["hello"]


def test_unknown_plugin_lists_installed():
    with pytest.raises(UnknownComponentError) as err:
        PluginHost(autoload=False, select=["no-such-plugin"])
    assert "no-such-plugin" in str(err.value) and "hello" in str(err.value)


def test_broken_plugin_does_not_break_listing(monkeypatch):
    monkeypatch.setattr(PluginHost, "entry_points",
                        staticmethod(broken_entry_points(PluginHost.entry_points)))
    host = PluginHost(autoload=True)
    infos = {i.name: i for i in host.plugin_infos()}
    assert "ModuleNotFoundError" in infos["broken"].error
    assert infos["hello"].error is None and infos["hello"].registers["source"] == ["hello"]


def test_selecting_a_broken_plugin_fails_loudly(monkeypatch):
    monkeypatch.setattr(PluginHost, "entry_points",
                        staticmethod(broken_entry_points(PluginHost.entry_points)))
    with pytest.raises(DualcurateError, match="failed to import"):
        PluginHost(autoload=False, select=["broken"])


def test_blocked_plugin_is_not_loaded():
    host = PluginHost(autoload=True, block=["hello"])
    assert "hello" not in host.infos
    assert "hello" not in host.names("source")


def test_register_and_unregister(plugin_host):
    plugin_host.register(CorePlugin(), name="x")
    assert plugin_host.get("source", "counting") is CountingSource
    assert plugin_host.owner("source", "counting") == "x"
    plugin_host.unregister("x")
    with pytest.raises(UnknownComponentError, match="Registered sources"):
        plugin_host.get("source", "counting")


def test_misspelt_hook_fails_loudly(plugin_host):
    from dualcurate import hookimpl

    class Typo:
        @hookimpl
        def dualcurate_register_sourcez(self, register):
            pass

    from dualcurate.plugins import RegistrationError

    with pytest.raises(RegistrationError, match=r"plugin 'typo': dualcurate_register_sourcez is "
                                                r"not a dualcurate hook; did you mean "
                                                r"dualcurate_register_sources\?"):
        plugin_host.register(Typo(), name="typo")
    assert "typo" not in plugin_host.infos


def test_unknown_stage_name_lists_registered(plugin_host):
    with pytest.raises(UnknownComponentError, match="local"):
        plugin_host.get("executor", "nope")


def test_autoload_off_loads_the_recipes_plugins(run_cli):
    from pathlib import Path

    recipe = Path(__file__).parents[2] / "examples" / "dualcurate-hello" / "recipe.toml"
    result = run_cli("run", str(recipe), "--out", "o",
                     env={"DUALCURATE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.exit_code == 0, result.stderr
    import json

    manifest = json.loads((result.cwd / "o" / "manifest.json").read_text())
    assert set(manifest["plugins"]) == {"builtins", "hello"}
