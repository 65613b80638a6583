"""The default recipe through the pictures: the demo's base model is a tiny Idefics3
(``synthetic-base``), so every stage that runs it (the difficulty filter's ``hf`` engine, the
``sft`` trainer, the Dual Tuning judge's training and evaluation) reads the rendered PNGs, with
no caption in the questions. Shrunk to run in a few minutes; the demo's own recipe is
docs/demo.md's."""

from __future__ import annotations

import json

import pytest

VISION = [
    "models.base.build.vision=true",  # the demo's recipe builds the caption-reading Qwen2
    "source.caption_in_question=false",
    'filter.engine={use="hf", model="@base", batch_size=16}',
    "filter.include_images=true",
    'judge.engine={use="hf", batch_size=16}',
    "source.train_per_family=12", "source.eval_per_family=6",
    "models.base.build.steps=10", "models.base.build.examples_per_family=8",
    "models.base.build.batch_size=8",
    "filter.samples_per_question=2", "train.max_steps=2", "train.per_device_train_batch_size=8",
    "judge.trainer.max_steps=4", "judge.trainer.per_device_train_batch_size=8",
    'models.base.path="base"',
]


@pytest.mark.slow
def test_default_recipe_runs_through_the_pictures(run_cli):
    result = run_cli("run", "--out", "demo", *(a for s in VISION for a in ("--set", s)))
    assert result.exit_code == 0, result.stderr[-3000:]
    run = result.cwd / "demo"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert [s["plugin"] for s in manifest["stages"]] == [
        "synthetic", "reference", "rule-verify", "difficulty", "sft", "dual-tuning"]
    config = json.loads((result.cwd / "base" / "config.json").read_text())
    assert config["architectures"] == ["Idefics3ForConditionalGeneration"]
    recipe = manifest["recipe"]
    assert recipe["filter"]["engine"]["use"] == recipe["judge"]["engine"]["use"] == "hf"

    from dualcurate import RunStore

    store = RunStore(run, create=False)
    rows = [r for t in store.iter_tables("filter") for r in t.to_pylist()]
    # the questions hold no caption: the pictures are the only way to the answer
    assert rows and all(r["images"] and r["caption"] not in r["question"] for r in rows)
    # the filter's proxy read the train rows' pictures (an engine error fails the stage):
    # each has rollouts, none of them failed
    train = [r for r in rows if r["split"] == "train"]
    assert train and all(r["pass_drawn"] >= 1 and len(r["rollouts"]) == r["pass_drawn"]
                         for r in train)
    assert all(t["error"] is None for r in train for t in r["rollouts"])
    efficacy = json.loads((run / "judge" / "artifacts" / "efficacy.json").read_text())
    groups = {g["group"]: g for g in efficacy["groups"]}
    assert set(groups) == set(recipe["source"]["families"])
    assert all(g["n_eval"] == 6 for g in groups.values())
    # the trained students were saved as vision-language models too (sft's final model)
    trained = [p for p in run.rglob("config.json")
               if "Idefics3ForConditionalGeneration" in p.read_text()]
    assert trained, "no trained Idefics3 in the run"
