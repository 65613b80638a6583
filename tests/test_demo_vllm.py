"""The usage we advertise, for real: `curate --plugin vllm-distill --plugin gspo` runs the default
recipe with vLLM (vllm-cpu, in its own venv: `make test-vllm`) as the distill engine and GSPO as
the trainer. Shrunk to run in a few minutes; the demo's base model (head_dim 64, which vLLM's
CPU attention needs) stands in for the teacher."""

from __future__ import annotations

import json
import os

import pytest

SMALL = ["source.train_per_family=8", "source.eval_per_family=4",
         "models.base.build.steps=10", "models.base.build.examples_per_family=8", "filter.samples_per_question=2",
         "judge.trainer.max_steps=4"]
pytestmark = pytest.mark.vllm


def test_default_recipe_with_vllm_distill_and_gspo(run_cli):
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    sets = [*SMALL, 'models.base.path="base"',  # every "@base", the teacher's included
            "train.plugins.gspo.max_steps=2", "train.plugins.gspo.num_generations=2",
            "train.plugins.gspo.per_device_train_batch_size=2",
            "train.plugins.gspo.max_completion_length=32"]
    args = [arg for item in sets for arg in ("--set", item)]
    result = run_cli("--plugin", "vllm-distill", "--plugin", "gspo", "run", "--out", "demo",
                     *args)
    assert result.exit_code == 0, result.stderr[-3000:]
    run = result.cwd / "demo"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    plugins = {s["name"]: s["plugin"] for s in manifest["stages"]}
    assert plugins["distill"] == "vllm-distill" and plugins["train"] == "gspo"
    from dualcurate import RunStore

    rows = RunStore(run, create=False).dataset("distill").to_list()
    traces = [t for r in rows if r["split"] == "train" for t in r["traces"]]
    assert traces and all(t["engine"] == "vllm" for t in traces)
    assert all(not r["traces"] for r in rows if r["split"] == "eval")
    assert list((run / "train").rglob("*.safetensors")), "GSPO saved no model"
    assert (run / "judge" / "artifacts" / "efficacy.json").exists()
