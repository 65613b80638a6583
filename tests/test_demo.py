"""The offline demo end to end: the default recipe through the real CLI, shrunk so it runs in
a minute or two, then the report. The demo's base model is a tiny Idefics3
(``synthetic-base``), so every stage that runs it (the difficulty filter's ``hf`` engine, the
``sft`` trainer, the Dual Tuning judge's training and evaluation) reads the rendered PNGs, with
no caption in the questions. The full-size demo is `make demo` (see docs/demo.md)."""

from __future__ import annotations

import json

import pytest

SMALL = ["source.train_per_family=12", "source.eval_per_family=6",
         "models.base.build.steps=20", "models.base.build.examples_per_family=10",
         "filter.samples_per_question=2", "train.max_steps=2", "judge.trainer.max_steps=10"]


def small_overrides(base: str) -> list[str]:
    """SMALL, with the base model (every stage's "@base") in the folder ``base``."""
    sets = [*SMALL, f'models.base.path="{base}"']
    return [arg for item in sets for arg in ("--set", item)]


@pytest.mark.slow
def test_default_recipe_runs_every_stage_and_reports(run_cli):
    result = run_cli("run", "--out", "demo", *small_overrides("base"))
    assert result.exit_code == 0, result.stderr[-3000:]
    run = result.cwd / "demo"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    stages = {s["name"]: s for s in manifest["stages"]}
    assert [s["plugin"] for s in manifest["stages"]] == [
        "synthetic", "reference", "rule-verify", "difficulty", "sft", "dual-tuning"]
    assert stages["source"]["rows_out"] == 3 * 18
    config = json.loads((result.cwd / "base" / "config.json").read_text())
    assert config["architectures"] == ["Idefics3ForConditionalGeneration"]
    # every train row gets a verified reference trace; eval rows none
    verify_rows = [r for t in _tables(run, "verify") for r in t]
    train_rows = [r for r in verify_rows if r["split"] == "train"]
    assert all(t["verdict"] == "correct" for r in train_rows for t in r["traces"])
    assert all(not r["traces"] for r in verify_rows if r["split"] == "eval")
    # eval rows always reach the judge
    filter_rows = [r for t in _tables(run, "filter") for r in t]
    assert all(r["keep"] for r in filter_rows if r["split"] == "eval")
    # the questions hold no caption: the pictures are the only way to the answer
    assert all(r["images"] and r["caption"] not in r["question"] for r in filter_rows)
    # the filter's proxy read the train rows' pictures (an engine error fails the stage):
    # each has rollouts, none of them failed
    train = [r for r in filter_rows if r["split"] == "train"]
    assert train and all(r["pass_drawn"] >= 1 and len(r["rollouts"]) == r["pass_drawn"]
                         for r in train)
    assert all(t["error"] is None for r in train for t in r["rollouts"])
    efficacy = json.loads((run / "judge" / "artifacts" / "efficacy.json").read_text())
    groups = {g["group"]: g for g in efficacy["groups"]}
    assert set(groups) == {"colour-ops", "nth-colour", "last-shape"}
    assert all(g["n_eval"] == 6 for g in groups.values())
    # the base model was built once, by [models.base]'s builder, where --set moved it, and
    # every stage that names "@base" used that folder
    assert (result.cwd / "base" / "dualcurate-model.json").exists()
    assert manifest["models"]["base"]["path"] == "base"
    assert manifest["models"]["base"]["builder"] == "synthetic-base"
    recipe = manifest["recipe"]
    assert recipe["train"]["model"] == recipe["judge"]["base_model"] == "base"
    assert _engine_model(recipe["filter"]) == "base"
    assert recipe["filter"]["engine"]["use"] == recipe["judge"]["engine"]["use"] == "hf"
    # the trained students were saved as vision-language models too (sft's final model)
    assert [p for p in run.rglob("config.json")
            if "Idefics3ForConditionalGeneration" in p.read_text()]

    from dualcurate.report import write_report

    html_path, md_path = write_report(run)
    html = html_path.read_text()
    assert 'id="dual-tuning-table"' in html and 'class="scatter"' in html
    assert "No teacher model was run" in md_path.read_text()


@pytest.mark.slow
def test_vllm_distill_without_vllm_stops_at_validation(run_cli):
    pytest.importorskip("dualcurate_vllm")
    from dualcurate_vllm.engine import vllm_available

    if vllm_available():
        pytest.skip("vllm is installed here; this checks the message without it")
    result = run_cli("--plugin", "vllm-distill", "--plugin", "gspo", "run", "--out", "x")
    assert result.exit_code != 0
    assert "vllm" in result.stderr and "pip install" in result.stderr
    assert not (result.cwd / "x" / "source").exists(), "nothing may run before validation"


def _engine_model(options):
    return options["engine"]["model"]


def _tables(run, stage):
    from dualcurate import RunStore

    return [t.to_pylist() for t in RunStore(run, create=False).iter_tables(stage)]
