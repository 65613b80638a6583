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
from dualcurate.kinds import KINDS
from dualcurate.plugins import HOOK_NAMES as HOST_HOOK_NAMES
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
    kind = next(k.name for k in KINDS if k.hook == hook)
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


def test_hook_dualcurate_register_model_builders(plugin_host, register_plugin):
    from dualcurate.models import ModelBuilder

    _register_one(plugin_host, register_plugin, "dualcurate_register_model_builders",
                  ModelBuilder)


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


def test_hook_dualcurate_report_sections(plugin_host, register_plugin, tmp_path):
    from dualcurate.report_sections import ReportSection, RunView
    from dualcurate.store import RunStore

    class P:
        @hookimpl
        def dualcurate_report_sections(self, run):
            return [ReportSection(title=f"Probe of {run.root.name}", anchor="probe",
                                  order=700)]

    class Nothing:
        @hookimpl
        def dualcurate_report_sections(self, run):
            return None

    register_plugin(P(), name="probe-sections")
    register_plugin(Nothing(), name="no-sections")
    store = RunStore(tmp_path / "run")
    store.save_manifest()
    sections = plugin_host.report_sections(RunView(tmp_path / "run"))
    assert [(s.title, s.plugin) for s in sections] == [("Probe of run", "probe-sections")]


def _scored_run(root: Path) -> Path:
    from dualcurate.schema import Sample
    from dualcurate.store import RunStore

    store = RunStore(root)
    rows = []
    for i in range(6):
        row = Sample(source="s", domain="math", question=f"q{i}", answer=str(i)).to_row()
        rows.append({**row, "split": "train", "score": i / 5, "keep": i != 5})
    store.write_shard("scored", 0, rows)
    store.stage_record("scored").update(kind="filter", plugin="scorer", status="done")
    store.save_manifest()
    return root


class _Scorer:
    """A third-party plugin: the subset ``high`` and the field ``score`` over its column."""

    @hookimpl
    def dualcurate_export_extras(self):
        import pyarrow as pa

        from dualcurate.export_extras import ExportField, ExportSubset

        return [ExportSubset("high", "score above 0.5", column="score",
                             hint="run the scorer filter", keep=lambda r: r["score"] > 0.5),
                ExportField("score", pa.float64(), lambda r: r.get("score")),
                ExportField("split", pa.string(), refines=True,
                            value=lambda r: "top" if r["score"] > 0.7 else None)]


def test_hook_dualcurate_export_extras(plugin_host, register_plugin, tmp_path):
    import pyarrow.parquet as pq

    from dualcurate.errors import DualcurateError
    from dualcurate.export_formats import export_tool
    from dualcurate.schema import Sample
    from dualcurate.store import RunStore

    run = _scored_run(tmp_path / "run")
    with pytest.raises(DualcurateError, match=r"--subset 'high': use all, eval$"):
        export_tool(run, "scored", tmp_path / "none", "verl", subset="high", host=plugin_host)
    register_plugin(_Scorer(), name="scorer")
    subsets, fields = plugin_host.export_extras()
    assert [(s.name, s.plugin) for s in subsets] == [("high", "scorer")]
    assert [(f.name, f.plugin) for f in fields] == [("score", "scorer"), ("split", "scorer")]

    counts = export_tool(run, "scored", tmp_path / "v", "verl", subset="high", host=plugin_host)
    table = pq.read_table(tmp_path / "v" / "scored_high.parquet")
    assert counts["rows"] == 2  # scores 0.6 and 0.8 (1.0 was not kept)
    assert table.schema.field("extra_info").type.names[-1] == "score"
    assert [r["extra_info"]["score"] for r in table.to_pylist()] == [0.6, 0.8]
    # a refining field takes the place of core's value where it has one
    assert [r["extra_info"]["split"] for r in table.to_pylist()] == ["train", "top"]
    export_tool(run, "scored", tmp_path / "lf", "llamafactory", subset="high", mode="short",
                host=plugin_host)
    assert "scored_high" in (tmp_path / "lf" / "dataset_info.json").read_text()
    # a stage without the subset's column is refused with the plugin's hint
    store = RunStore(run, create=False)
    store.write_shard("plain", 0, [Sample(source="s", domain="d", question="q",
                                          answer="a").to_row()])
    store.save_manifest()
    with pytest.raises(DualcurateError, match=r"no 'score' column.*run the scorer filter"):
        export_tool(run, "plain", tmp_path / "p", "verl", subset="high", host=plugin_host)


def test_export_extras_two_plugins_adding_one_name_is_an_error(plugin_host, register_plugin):
    from dualcurate.errors import DualcurateError

    register_plugin(_Scorer(), name="scorer")
    register_plugin(_Scorer(), name="scorer-copy")
    with pytest.raises(DualcurateError, match=r"export subset 'high' is added by plugin "
                                              r"'scorer' and again by plugin 'scorer-copy'"):
        plugin_host.export_extras()


def test_export_extras_may_not_take_a_name_core_has(plugin_host, register_plugin, tmp_path):
    import pyarrow as pa

    from dualcurate.errors import DualcurateError
    from dualcurate.export_extras import ExportField, ExportSubset
    from dualcurate.export_formats import export_tool, export_verl
    from dualcurate.store import RunStore

    class ShadowSubset:
        @hookimpl
        def dualcurate_export_extras(self):
            return [ExportSubset("eval", "mine", column="score", hint="-", keep=bool)]

    class ShadowField:
        @hookimpl
        def dualcurate_export_extras(self):
            return [ExportField("id", pa.string(), lambda r: "x")]

    run = _scored_run(tmp_path / "run")
    register_plugin(ShadowSubset(), name="shadow-subset")
    with pytest.raises(DualcurateError, match=r"subset 'eval' of plugin 'shadow-subset': core"):
        export_tool(run, "scored", tmp_path / "lf", "llamafactory", subset="eval",
                    host=plugin_host)
    register_plugin(ShadowField(), name="shadow-field")
    with pytest.raises(DualcurateError, match=r"field 'id' of plugin 'shadow-field'"):
        export_tool(run, "scored", tmp_path / "v", "verl", host=plugin_host)
    with pytest.raises(DualcurateError, match=r"'region' of plugin 'x' refines core's, but "):
        export_verl(RunStore(run, create=False), "scored", tmp_path / "v", name="v",
                    fields=[ExportField("region", pa.string(), str, refines=True, plugin="x")])
    with pytest.raises(ValueError, match="lowercase"):
        ExportSubset("Bad Name", "x", column="c", hint="h", keep=bool)


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
    found = re.search(r"def (.+?) -> (.+?):\n", source, re.S)
    signature = f"{found.group(1)} -> {found.group(2)}"
    assert signature in docs, f"docs/plugin-hooks.md lacks `{signature}`"
    first_line = inspect.getdoc(func).splitlines()[0]
    assert first_line in docs


def test_every_kind_has_a_hook():
    assert {k.hook for k in KINDS} <= set(HOOK_NAMES)
    assert list(HOST_HOOK_NAMES) == HOOK_NAMES  # what the host checks a plugin's hooks by


def test_every_kind_names_importable_base_classes():
    import importlib

    from dualcurate.kinds import KINDS

    for k in KINDS:
        for base in k.bases:
            module, _, name = base.rpartition(".")
            cls = getattr(importlib.import_module(module), name)
            assert getattr(cls, "kind", None) == k.name or k.name == "filter", base


def _plugin(hook: str, cls: type, name: str | None = None):
    class P:
        pass

    def impl(self, register):
        register(cls, name=name)

    setattr(P, hook, hookimpl(impl))
    return P()


def test_two_plugins_registering_one_name_is_an_error_naming_both(plugin_host,
                                                                  register_plugin):
    from dualcurate.plugins import RegistrationError

    first = type("FirstSource", (Source,), {"name": "same"})
    second = type("SecondSource", (Source,), {"name": "same"})
    register_plugin(_plugin("dualcurate_register_sources", first), name="plugin-one")
    register_plugin(_plugin("dualcurate_register_sources", second), name="plugin-two")
    with pytest.raises(RegistrationError) as err:
        plugin_host.get("source", "same")
    assert "'plugin-one'" in str(err.value) and "'plugin-two'" in str(err.value)
    assert "source 'same'" in str(err.value)


def test_registering_a_class_of_the_wrong_kind_is_an_error(plugin_host, register_plugin):
    from dualcurate.plugins import RegistrationError

    verifier = type("AVerifier", (Verifier,), {"name": "not-a-source"})
    register_plugin(_plugin("dualcurate_register_sources", verifier), name="confused")
    with pytest.raises(RegistrationError, match=r"plugin 'confused'.*registered as a source"
                                                r".*is a verifier"):
        plugin_host.get("source", "not-a-source")


def test_registering_a_class_of_no_kind_is_an_error(plugin_host, register_plugin):
    from dualcurate.plugins import RegistrationError

    class NotAnEngine:
        name = "plain"

    register_plugin(_plugin("dualcurate_register_engines", NotAnEngine), name="plain-plugin")
    with pytest.raises(RegistrationError, match=r"NotAnEngine does not subclass Engine: subclass it .*dualcurate.engine.Engine"):
        plugin_host.get("engine", "plain")


def test_a_stage_defining_check_instead_of_preflight_is_refused(plugin_host, register_plugin):
    """``check(host)`` is preflight's old name: nothing would call it, so registering it
    fails, naming the hook, rather than skipping the plugin's checks in silence."""
    from dualcurate.plugins import RegistrationError

    def check(self, host):
        return ["never seen"]

    old = type("OldHook", (Source,), {"name": "old-hook", "check": check})
    register_plugin(_plugin("dualcurate_register_sources", old), name="old-hook-plugin")
    with pytest.raises(RegistrationError, match=r"'old-hook'.*defines check\(host\).*"
                                                r"preflight\(host\): rename it"):
        plugin_host.get("source", "old-hook")


def test_one_plugin_registering_one_class_twice_is_fine(plugin_host, register_plugin):
    cls = type("Twice", (Source,), {"name": "twice"})

    class P:
        @hookimpl
        def dualcurate_register_sources(self, register):
            register(cls)
            register(cls)

    register_plugin(P(), name="twice")
    assert plugin_host.get("source", "twice") is cls
