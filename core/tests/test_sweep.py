"""``curate sweep``: a grid of recipe variants, each a normal run directory, sharing the stages
whose signature they have in common (hard links, never copies) and one request cache."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualcurate import (
    Completion,
    Engine,
    EngineConfig,
    Filter,
    Pipeline,
    RecipeError,
    Register,
    StageConfig,
    hookimpl,
    load_recipe,
)
from dualcurate.cache import RequestCache
from dualcurate.formats import render_trace
from dualcurate.recipe import parse_value
from dualcurate.report_sections import ReportSection, SummaryTable
from dualcurate.store import RunStore
from dualcurate.sweep import Sweep, parse_grid, plan_sweep, toml_value, variant_name
from dualcurate.sweep_report import sweep_tables, write_sweep_report


class CountingEchoConfig(EngineConfig):
    batch_size: int = 4
    runtime_fields = frozenset({"batch_size"})


class CountingEcho(Engine):
    """Answers with the question's last word; counts the samples it is asked for."""

    name = "sweep-echo"
    Config = CountingEchoConfig
    samples = 0
    lock = threading.Lock()

    def generate(self, requests, sampling, on_result=None):
        out = []
        for i, request in enumerate(requests):
            text = request.messages[-1]["content"][-1]["text"]
            with CountingEcho.lock:
                CountingEcho.samples += len(request.indices())
            comps = [Completion(text=render_trace(f"step {idx}", text.split()[-1].rstrip("?")),
                                finish_reason="stop", completion_tokens=2)
                     for idx in request.indices()]
            out.append(comps)
            if on_result:
                on_result(i, comps)
        return out


class ModConfig(StageConfig):
    mod: int = 2


class ModFilter(Filter):
    """Keeps rows whose answer is a multiple of ``mod``."""

    name = "sweep-mod"
    Config = ModConfig

    def process(self, rows, ctx):
        return [{**r, "keep": int(r["answer"]) % self.config.mod == 0} for r in rows]


class SweepTestPlugin:
    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        register(CountingEcho)

    @hookimpl
    def dualcurate_register_filters(self, register: Register) -> None:
        register(ModFilter)

    @hookimpl
    def dualcurate_report_sections(self, run):
        rec = run.stage("filter")
        if rec is None:
            return None
        return [ReportSection(title="Kept by the mod filter", anchor="mod-kept",
                              summary=SummaryTable("Kept by the mod filter", ["kept"],
                                                   [[str(rec.get("rows_out"))]]),
                              data={"groups": [{"group": "all", "DT_S": 10.0,
                                                "DT_L": float(rec.get("rows_out", 0))}]})]


RECIPE = """
[run]
shard_size = 4

[source]
use = "counting"
n = 10

[distill]
use = "teacher"
engine = { use = "sweep-echo", model = "m" }
samples_per_question = 2

[filter]
use = "sweep-mod"
mod = 2

[judge]
use = "count-judge"
"""


@pytest.fixture
def host(core_host, register_plugin):
    register_plugin(SweepTestPlugin(), name="sweep-test")
    CountingEcho.samples = 0
    return core_host


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    return path


def rows(run: Path) -> dict[str, list[dict]]:
    store = RunStore(run, create=False)
    assert store.manifest["status"] == "done"
    return {s["name"]: store.dataset(s["name"]).to_list() for s in store.manifest["stages"]}


def sweep(recipe, out, host, grid=(), sets=()) -> list[dict]:
    plan = plan_sweep(str(recipe), grid, sets, host=host)
    return Sweep(plan, out, host=host).run()


def test_variants_equal_standalone_runs_and_share_what_they_have_in_common(
        host, recipe, tmp_path):
    out = tmp_path / "sweep"
    entries = sweep(recipe, out, host, grid=["filter.mod=[2, 4, 3]"])
    index = json.loads((out / "sweep.json").read_text())
    assert [v["name"] for v in index["variants"]] == ["mod-2", "mod-4", "mod-3"]
    assert [v["overrides"] for v in index["variants"]] == [{"filter.mod": 2},
                                                           {"filter.mod": 4},
                                                           {"filter.mod": 3}]
    assert index["variants"] == entries
    # the first computes everything; the others only the filter and what follows it
    assert entries[0]["stages"] == dict.fromkeys(["source", "distill", "filter", "judge"],
                                                 "computed")
    for entry in entries[1:]:
        assert entry["stages"] == {"source": "reused", "distill": "reused",
                                   "filter": "computed", "judge": "computed"}
    # generation happened once: 10 questions x 2 samples in the one shared cache
    assert CountingEcho.samples == 20
    cache = RequestCache(out / "cache.sqlite")
    try:
        assert cache.count() == 20
    finally:
        cache.close()
    # every variant is what `curate run --set` gives on its own, row for row
    for value, entry in zip((2, 4, 3), entries, strict=True):
        alone = Pipeline(load_recipe(str(recipe), [f"filter.mod={value}"]), host=host) \
            .run(tmp_path / f"alone-{value}")
        assert rows(out / entry["run"]) == rows(alone.root)
        assert entry["metrics"]["rows"]["filter"] == sum(
            1 for r in rows(alone.root)["filter"] if r["keep"])
    # shared shards are the first variant's files (hard links), not copies
    first = RunStore(out / "mod-2", create=False)
    for name in ("mod-4", "mod-3"):
        other = RunStore(out / name, create=False)
        for stage in ("source", "distill"):
            mine = [p.stat().st_ino for p in other.shard_files(stage)]
            assert mine and mine == [p.stat().st_ino for p in first.shard_files(stage)]
            assert other.manifest["stages"][["source", "distill"].index(stage)][
                "shared_from"] == f"../mod-2/{stage}"
        assert [p.stat().st_ino for p in other.shard_files("filter")] != \
            [p.stat().st_ino for p in first.shard_files("filter")]


def test_more_samples_per_question_pay_only_for_the_new_ones(host, recipe, tmp_path):
    entries = sweep(recipe, tmp_path / "sweep", host,
                    grid=["distill.samples_per_question=[1, 3]"])
    assert [e["stages"]["source"] for e in entries] == ["computed", "reused"]
    assert [e["stages"]["distill"] for e in entries] == ["computed", "computed"]
    assert CountingEcho.samples == 10 * 3  # 10 for the first, 20 new for the second
    traces = [len(r["traces"]) for r in rows(tmp_path / "sweep" / entries[1]["run"])["distill"]]
    assert traces == [3] * 10


def test_nothing_a_variant_writes_changes_another(host, recipe, tmp_path):
    out = tmp_path / "sweep"
    sweep(recipe, out, host, grid=["filter.mod=[2, 4]"])
    before = rows(out / "mod-2")
    # rerun the second variant with another source: its shared stages recompute in its own
    # folders, the first variant's files stay as they were
    Pipeline(load_recipe(str(recipe), ["filter.mod=4", "source.n=6",
                                       f"run.cache=\"{out / 'cache.sqlite'}\""]),
             host=host).run(out / "mod-4")
    assert len(rows(out / "mod-4")["source"]) == 6
    assert rows(out / "mod-2") == before
    # and a shared stage a variant redoes (its upstream rewrote shards) is unlinked first
    store = RunStore(out / "mod-4", create=False)
    assert not any(r.get("shared_from") for r in store.manifest["stages"])


def test_a_killed_sweep_resumes(host, recipe, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    calls = {"n": 0}
    real = ModFilter.process

    class Killed(BaseException):
        pass

    def dies_on_the_second_variant(self, rows, ctx):
        if self.config.mod == 4:
            calls["n"] += 1
            if calls["n"] == 2:  # the second shard of the second variant's filter
                raise Killed
        return real(self, rows, ctx)

    monkeypatch.setattr(ModFilter, "process", dies_on_the_second_variant)
    with pytest.raises(Killed):
        sweep(recipe, out, host, grid=["filter.mod=[2, 4, 3]"])
    index = json.loads((out / "sweep.json").read_text())
    assert [v["status"] for v in index["variants"]] == ["done", "failed", "pending"]
    monkeypatch.setattr(ModFilter, "process", real)
    first = (out / "mod-2" / "manifest.json").read_bytes()
    entries = sweep(recipe, out, host, grid=["filter.mod=[2, 4, 3]"])
    assert [e["status"] for e in entries] == ["done"] * 3
    assert (out / "mod-2" / "manifest.json").read_bytes() == first  # nothing recomputed
    assert entries[1]["stages"]["distill"] == "reused"
    assert CountingEcho.samples == 20
    alone = Pipeline(load_recipe(str(recipe), ["filter.mod=4"]), host=host) \
        .run(tmp_path / "alone")
    assert rows(out / "mod-4") == rows(alone.root)


def test_a_grid_key_no_stage_has_fails_before_anything_runs(host, recipe, tmp_path):
    with pytest.raises(RecipeError) as err:
        sweep(recipe, tmp_path / "sweep", host, grid=["filtr.mod=[2, 3]"])
    assert any("filtr.mod" in p and "no stage [filtr]" in p for p in err.value.problems)
    with pytest.raises(RecipeError) as err:
        sweep(recipe, tmp_path / "sweep", host, grid=["filter.mood=[2, 3]"])
    assert any("mood" in p and "variant mood-2" in p for p in err.value.problems), \
        err.value.problems
    assert not (tmp_path / "sweep").exists()
    assert CountingEcho.samples == 0


def test_the_recipes_sweep_table_and_set_apply_to_every_variant(host, tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE + '\n[sweep.grid]\n"filter.mod" = [2, 5]\n')
    plan = plan_sweep(str(path), sets=["source.n=7"], host=host)
    assert [v.overrides for v in plan.variants] == [{"filter.mod": 2}, {"filter.mod": 5}]
    entries = Sweep(plan, tmp_path / "sweep", host=host).run()
    assert [e["metrics"]["rows"]["source"] for e in entries] == [7, 7]
    # --grid wins over [sweep] for its key; several keys form their product
    plan = plan_sweep(str(path), grid=["filter.mod=[3]", "source.n=[4, 6]"], host=host)
    assert [v.overrides for v in plan.variants] == [
        {"filter.mod": 3, "source.n": 4}, {"filter.mod": 3, "source.n": 6}]
    # a plain `curate run` of a sweep recipe runs the recipe as written
    assert Pipeline(load_recipe(str(path)), host=host).run(tmp_path / "plain")


def test_report_compares_the_variants_with_the_plugins_metrics(host, recipe, tmp_path):
    out = tmp_path / "sweep"
    entries = sweep(recipe, out, host, grid=["filter.mod=[2, 4]"])
    assert [e["metrics"]["sections"]["Kept by the mod filter"]["rows"] for e in entries] == \
        [[["10"]], [["5"]]]
    assert [e["metrics"]["accuracy"]["all"]["DT_L"] for e in entries] == [10.0, 5.0]
    html_path, md_path = write_sweep_report(out)
    md = md_path.read_text()
    assert "| mod-4 | filter.mod=4 | done | filter, judge | source, distill |" in md
    assert "| mod-2 | 10 | 10 | 10 | 2 |" in md  # rows kept per stage
    assert "| mod-4 | 10* | 10* | 5 | 2 |" in md
    assert "accuracy.svg" in md and (out / "accuracy.svg").read_text().startswith("<svg")
    assert "<svg" in html_path.read_text()


def test_cli_sweep_names_a_bad_grid_key_before_running(run_cli, tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    result = run_cli("sweep", str(path), "--grid", "filtr.mod=[1, 2]", "--out", "s")
    assert result.exit_code == 2
    assert "filtr.mod" in result.stderr and not (result.cwd / "s").exists()


@given(st.recursive(st.none() | st.booleans() | st.integers() |
                    st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(st.text(min_size=1), inner, max_size=3), max_leaves=8)
       .filter(lambda v: v is not None and "None" not in repr(v)))
def test_toml_values_parse_back(value):
    assert parse_value(toml_value(value)) == value


@given(st.dictionaries(st.sampled_from(["filter.keep", "distill.k", "judge.k", "run.seed"]),
                       st.text(max_size=60) | st.integers(), min_size=1))
def test_variant_names_are_plain_file_names(overrides):
    name = variant_name(overrides)
    assert name and "/" not in name and not name.startswith(".") and len(name) < 200
    assert all(c.isalnum() or c in "._+-" for c in name), name


def test_grid_items_are_checked():
    assert parse_grid(['filter.keep=["a < 1", "True"]', "run.seed=[0,1]"]) == [
        ("filter.keep", ["a < 1", "True"]), ("run.seed", [0, 1])]
    for bad in ("filter.keep", "seed=[1]", "filter.k=1", "filter.k=[]", "filter.k=[1,"):
        with pytest.raises(RecipeError) as err:
            parse_grid([bad])
        assert bad in str(err.value)


def test_hard_links_fall_back_to_copies(tmp_path, monkeypatch):
    from dualcurate.sweep import _link_tree

    src = tmp_path / "a"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("x")
    (src / ".tmp-half").write_text("no")

    def refuse(*args):
        raise OSError(18, "cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    assert _link_tree(src, tmp_path / "b") == 1
    assert (tmp_path / "b" / "sub" / "f").read_text() == "x"
    assert not (tmp_path / "b" / ".tmp-half").exists()


def test_a_section_table_lines_up_variants_with_different_columns():
    """One variant's summary with more columns (the Dual Tuning table's Img_S/Img_L for a
    variant with image groups) lines up by column name; missing cells are empty."""
    def entry(name, columns, rows):
        return {"name": name, "overrides": {}, "metrics": {"sections": {
            "T": {"columns": columns, "rows": rows}}}}

    index = {"variants": [entry("a", ["group", "DT_S"], [["g", "50.0"]]),
                          entry("b", ["group", "DT_S", "Img_S"], [["g", "60.0", "20.0"]])]}
    title, columns, rows = sweep_tables(index)[-1]
    assert (title, columns) == ("T", ["variant", "group", "DT_S", "Img_S"])
    assert rows == [["a", "g", "50.0", ""], ["b", "g", "60.0", "20.0"]]
