"""Pipeline: manifest, shards, resume, signatures, library use."""

from __future__ import annotations

import copy
import json

import datasets
import pytest

from dualcurate import Pipeline, RecipeError, RunStore, StoreError, load_recipe
from dualcurate.schema import rows_to_table

from .conftest import RECIPE, DoubleStage


def run(host, tmp_path, recipe=None, name="run"):
    return Pipeline(load_recipe(copy.deepcopy(recipe or RECIPE)), host=host).run(tmp_path / name)


def test_manifest_records_every_stage(core_host, tmp_path):
    store = run(core_host, tmp_path)
    manifest = json.loads((store.root / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert set(manifest["recipe"]) == {"run", "source", "distill", "filter", "judge"}
    assert {"builtins", "core-test"} <= set(manifest["plugins"])
    stages = {s["name"]: s for s in manifest["stages"]}
    for rec in stages.values():
        assert {"name", "plugin", "status", "rows_in", "rows_out", "seconds"} <= set(rec)
    assert stages["source"]["rows_out"] == 10
    assert stages["distill"]["rows_in"] == 10
    # answers 0,2,...,18: those divisible by 4 are 0,4,8,12,16
    assert stages["filter"]["rows_out"] == 5
    assert stages["judge"]["rows_in"] == 5
    # kept rows are i = 0, 2, 4, 6, 8: all in the "math" domain (i % 2 == 0)
    assert stages["judge"]["report"] == {"groups": {"math": 5}}
    assert stages["judge"]["rows_out"] == 2


def test_shards_are_parquet_and_filter_keeps_dropped_rows(core_host, tmp_path):
    store = run(core_host, tmp_path)
    assert store.finished_shards("source") == [0, 1, 2]  # 10 rows, shard_size 4
    filt = store.dataset("filter")
    assert len(filt) == 10 and sum(filt["keep"]) == 5
    assert store.dataset("distill")["doubled"] == [4 * i for i in range(10)]


def test_rerun_skips_finished_stages(core_host, tmp_path):
    store = run(core_host, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in store.shard_files("distill")}
    store2 = run(core_host, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in store2.shard_files("distill")} == mtimes


def test_partial_stage_resumes_only_missing_shards(core_host, tmp_path, monkeypatch):
    calls = []
    crash = {"armed": True}
    original = DoubleStage.process

    def counting(self, rows, ctx):
        calls.append(len(rows))
        if crash["armed"] and len(calls) == 2:
            crash["armed"] = False
            raise RuntimeError("simulated crash")
        return original(self, rows, ctx)

    monkeypatch.setattr(DoubleStage, "process", counting)
    with pytest.raises(Exception, match="simulated crash"):
        run(core_host, tmp_path)
    store = RunStore(tmp_path / "run", create=False)
    assert store.finished_shards("distill") == [0]
    assert store.manifest["status"] == "failed"
    calls.clear()
    store = run(core_host, tmp_path)
    assert calls == [4, 2]  # shards 1 and 2 only
    ids = store.dataset("distill")["id"]
    assert len(ids) == 10 == len(set(ids))


def test_changed_config_recomputes_that_stage_and_downstream_only(core_host, tmp_path):
    store = run(core_host, tmp_path)
    source_mtimes = [p.stat().st_mtime_ns for p in store.shard_files("source")]
    recipe = copy.deepcopy(RECIPE)
    recipe["distill"]["factor"] = 3
    store = run(core_host, tmp_path, recipe)
    assert [p.stat().st_mtime_ns for p in store.shard_files("source")] == source_mtimes
    assert store.dataset("distill")["doubled"] == [6 * i for i in range(10)]


def test_runtime_fields_do_not_invalidate(core_host, tmp_path):
    run(core_host, tmp_path)
    recipe = copy.deepcopy(RECIPE)
    recipe["distill"]["batch_size"] = 99
    store = RunStore(tmp_path / "run", create=False)
    before = [p.stat().st_mtime_ns for p in store.shard_files("distill")]
    store = run(core_host, tmp_path, recipe)
    assert [p.stat().st_mtime_ns for p in store.shard_files("distill")] == before


def test_changed_shard_size_is_refused(core_host, tmp_path):
    run(core_host, tmp_path)
    recipe = copy.deepcopy(RECIPE)
    recipe["run"]["shard_size"] = 3
    with pytest.raises(StoreError, match="shard_size=4"):
        run(core_host, tmp_path, recipe)


def test_map_stage_runs_on_a_dataset_without_cli():
    ds = datasets.Dataset(rows_to_table([{"id": str(i), "answer": str(i)} for i in range(5)]))
    out = DoubleStage({"factor": 10}).map_dataset(ds)
    assert out["doubled"] == [0, 10, 20, 30, 40]


def test_library_pipeline_from_toml(core_host, tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[run]\nshard_size = 5\n[source]\nuse = "counting"\nn = 7\n'
                    '[distill]\nuse = "double"\nfactor = 1\n')
    store = Pipeline(load_recipe(path), host=core_host).run(tmp_path / "lib")
    assert store.dataset("distill")["doubled"] == [2 * i for i in range(7)]


def test_map_stage_changing_row_count_is_an_error(core_host, tmp_path, monkeypatch):
    monkeypatch.setattr(DoubleStage, "process", lambda self, rows, ctx: rows[:-1])
    with pytest.raises(Exception, match="one row per input row"):
        run(core_host, tmp_path)


def test_shards_with_failed_requests_are_redone_next_run(core_host, tmp_path, monkeypatch):
    calls = []
    original = DoubleStage.process

    def flaky(self, rows, ctx):
        calls.append(rows[0]["id"])
        if len(calls) == 2 and not hasattr(flaky, "done"):
            flaky.done = True
            ctx.stats.failed += 1  # what generate_cached does for a failed request
        return original(self, rows, ctx)

    monkeypatch.setattr(DoubleStage, "process", flaky)
    store = run(core_host, tmp_path)
    assert store.stage_record("distill")["retry_shards"] == [1]
    calls.clear()
    store = run(core_host, tmp_path)
    assert len(calls) == 1  # only shard 1 is redone
    assert store.stage_record("distill")["retry_shards"] == []
    # downstream map stages redo the rewritten shard too; ids stay unique
    ids = store.dataset("filter")["id"]
    assert len(ids) == 10 == len(set(ids))


def test_map_stage_finish_report_reaches_the_manifest(core_host, tmp_path, monkeypatch):
    monkeypatch.setattr(DoubleStage, "finish",
                        lambda self, ctx: {"shards": len(ctx.store.finished_shards("distill"))},
                        raising=False)
    store = run(core_host, tmp_path)
    assert store.stage_record("distill")["report"] == {"shards": 3}


def test_every_stage_progress_ends_complete(core_host, tmp_path):
    """Each stage's bar ends with done == total, the judge (a dataset stage) counting its
    rows; a rich bar is marked finished, so its clock stops."""
    from rich.progress import Progress

    from dualcurate.progress import RichProgress

    bars: dict[str, RichProgress] = {}
    with Progress(disable=True) as rich_progress:
        def factory(name: str) -> RichProgress:
            bars[name] = RichProgress(rich_progress, name)
            return bars[name]

        Pipeline(load_recipe(copy.deepcopy(RECIPE)), host=core_host).run(
            tmp_path / "run", progress_factory=factory)
        tasks = {t.description: t for t in rich_progress.tasks}
    assert set(bars) == {"source", "distill", "filter", "judge"}
    assert {name: (bar.done, bar.total) for name, bar in bars.items()} == {
        "source": (10, 10), "distill": (10, 10), "filter": (10, 10), "judge": (5, 5)}
    assert all(task.finished for task in tasks.values())


def test_progress_reservation_accounting():
    """Requests announced up front (reserve) are drawn by generate (expect); what is not sent
    is released; requests beyond the reservation grow the total."""
    from dualcurate.progress import StageProgress

    progress = StageProgress()
    progress.start(4, unit="rows")
    progress.reserve(4)
    progress.expect(3)
    progress.release(1)
    assert (progress.total, progress.reserved) == (4 + 3, 0)
    progress.expect(2)  # nothing reserved left: the total grows
    progress.release(5)  # nothing to release
    assert (progress.total, progress.reserved) == (4 + 3 + 2, 0)


def test_executor_options_are_checked_before_anything_runs(core_host, tmp_path):
    """A misspelt executor option fails validation, not the first map stage after the
    source already ran."""
    recipe = load_recipe({**RECIPE, "run": {**RECIPE["run"],
                                            "executor_options": {"max_shards_in_flihgt": 2}}})
    with pytest.raises(RecipeError) as err:
        Pipeline(recipe, host=core_host).run(tmp_path / "run")
    assert err.value.problems == [
        "[run] executor_options.max_shards_in_flihgt: unknown option for plugin 'local'; check "
        "the spelling against its Config (`curate validate RECIPE --explain` lists the options "
        "it takes)"]
    assert not (tmp_path / "run").exists()
