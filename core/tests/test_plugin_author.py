"""The plugin author's path: what a third-party author gets wrong, and what core says."""

from __future__ import annotations

import importlib.metadata as md
import json
import sys
import textwrap
from pathlib import Path

import pytest

from dualcurate import PluginHost, Source, UnknownComponentError, hookimpl
from dualcurate.plugins import PluginWarning, RegistrationError

HELLO = Path(__file__).parents[2] / "examples" / "dualcurate-hello" / "recipe.toml"


@pytest.fixture
def install(tmp_path, monkeypatch):
    """``install(name, source)``: an entry point ``name`` whose module holds ``source``, as
    if a distribution providing it were installed."""
    monkeypatch.syspath_prepend(str(tmp_path))
    extra: dict[str, md.EntryPoint] = {}
    real = PluginHost.entry_points

    def entry_points():
        return {**real(), **extra}

    monkeypatch.setattr(PluginHost, "entry_points", staticmethod(entry_points))

    def add(name: str, source: str) -> None:
        module = f"author_{name.replace('-', '_')}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(module, None)
        extra[name] = md.EntryPoint(name=name, value=module, group="dualcurate")

    yield add


CLASHING = """
    from dualcurate import Distiller, hookimpl

    class MyTeacher(Distiller):
        name = "teacher"          # a built-in's name

        def process(self, rows, ctx):
            return rows

    @hookimpl
    def dualcurate_register_distillers(register):
        register(MyTeacher)
"""


def test_a_name_colliding_with_a_builtin_fails_only_where_it_is_used(install, run_cli,
                                                                       tmp_path):
    install("clash", CLASHING)
    listed = run_cli("plugins", "--json")
    assert listed.exit_code == 0, listed.stderr
    infos = {i["name"]: i for i in json.loads(listed.stdout)}
    for name in ("clash", "builtins"):
        assert any("distiller 'teacher' is registered by two plugins" in p
                   for p in infos[name]["problems"]), infos[name]
    table = run_cli("plugins")
    assert table.exit_code == 0 and "refused" in table.stdout

    assert run_cli("validate", str(HELLO)).exit_code == 0  # no teacher in it
    recipe = tmp_path / "teacher.toml"
    recipe.write_text('[source]\nuse = "hello"\n\n[distill]\nuse = "teacher"\n'
                      'engine = "hf"\n')
    used = run_cli("validate", str(recipe))
    assert used.exit_code == 2
    assert "'builtins'" in used.stderr and "'clash'" in used.stderr
    assert "--no-plugin clash" in used.stderr


MISSPELT = """
    from dualcurate import hookimpl

    @hookimpl
    def dualcurate_register_filter(register):
        pass
"""


def test_a_misspelt_hook_names_the_hook_and_the_nearest_one(install, run_cli):
    install("typo", MISSPELT)
    selected = run_cli("--plugin", "typo", "plugins")
    assert selected.exit_code == 2
    assert "dualcurate_register_filter is not a dualcurate hook" in selected.stderr
    assert "did you mean dualcurate_register_filters?" in selected.stderr
    assert "internal error" not in selected.stderr
    listed = run_cli("plugins", "--json")  # autoloaded: recorded, the rest still works
    assert listed.exit_code == 0
    info = next(i for i in json.loads(listed.stdout) if i["name"] == "typo")
    assert "did you mean dualcurate_register_filters?" in info["error"]


def test_a_forgotten_hookimpl_warns_naming_the_plugin_and_its_methods(plugin_host):
    source = type("Forgot", (Source,), {"name": "forgot"})

    class Plugin:
        def dualcurate_register_sources(self, register):  # no @hookimpl
            register(source)

        def dualcurate_register_filtres(self, register):  # no @hookimpl, misspelt too
            pass

        def helper(self):
            pass

    with pytest.warns(PluginWarning, match=r"plugin 'forgot-plugin': dualcurate_register_"
                                           r"filtres, dualcurate_register_sources are named "
                                           r"like a hook but not marked @hookimpl"):
        info = plugin_host.register(Plugin(), name="forgot-plugin")
    assert info.warnings and info.hooks == []
    assert plugin_host.names("source") == []


def test_a_forgotten_hookimpl_is_listed_by_curate_plugins(install, run_cli):
    install("forgot", """
        from dualcurate import Source

        class S(Source):
            name = "s"

        def dualcurate_register_sources(register):
            register(S)
    """)
    with pytest.warns(PluginWarning, match="plugin 'forgot'"):
        listed = run_cli("plugins", "--json")
    assert listed.exit_code == 0
    info = next(i for i in json.loads(listed.stdout) if i["name"] == "forgot")
    assert info["registers"] == {}
    assert "dualcurate_register_sources is named like a hook but not marked @hookimpl" in \
        info["warnings"][0]


def test_a_class_with_no_base_is_told_to_subclass_it(plugin_host, register_plugin):
    class LengthFilter:  # forgot to subclass Filter
        name = "length"

    class Plugin:
        @hookimpl
        def dualcurate_register_filters(self, register):
            register(LengthFilter)

    register_plugin(Plugin(), name="p")
    with pytest.raises(RegistrationError, match=r"LengthFilter does not subclass Filter or "
                                                r"DatasetFilter: subclass it \(`class "
                                                r"LengthFilter\(Filter\)`"):
        plugin_host.get("filter", "length")
    assert "local" in plugin_host.names("executor")  # the rest of the registry works


def test_host_get_loads_an_installed_plugin_on_first_need():
    host = PluginHost(autoload=False)
    assert "hello" not in host.infos
    with pytest.raises(UnknownComponentError, match=r"autoload is off.*hello.*--plugin NAME"):
        host.get("filter", "hello-length")  # no plugin of that name: which one to load?
    assert host.get("source", "hello").__name__ == "HelloSource"  # the plugin `hello`
    assert "hello" in host.infos
    assert host.get("filter", "hello-length").__name__ == "AnswerLengthFilter"


def test_explain_on_an_invalid_recipe_lists_the_options_components_take(run_cli, tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[source]\nuse = "hello"\n\n[distill]\nuse = "teacher"\n'
                      'engine = { use = "hello-sum", modle = "x" }\n')
    result = run_cli("validate", str(recipe), "--explain", "--json")
    assert result.exit_code == 2
    assert "engine.modle: unknown option" in result.stderr
    components = {(c["stage"], c["use"]): c for c in json.loads(result.stdout)}
    engine = {o["option"]: o for o in components[("distill.engine", "hello-sum")]["options"]}
    assert engine["model"]["default"] == "hello-sum" and engine["wrong_every"]["default"] == 0
    assert ("source", "hello") in components and ("distill", "teacher") in components


def test_an_engine_contract_naming_stage_cls_says_engine_cls():
    from dualcurate.testing.contracts import EngineContract

    with pytest.raises(TypeError, match=r"set engine_cls.*sets stage_cls"):
        type("TestMine", (EngineContract,), {"stage_cls": object})
