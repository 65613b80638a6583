"""The usage we advertise, for real: `curate --plugin vllm-distill --plugin gspo` runs the default
recipe with vLLM (vllm-cpu, in its own venv: `make test-vllm`) as the distill engine and GSPO as
the trainer. Shrunk to run in a few minutes; the demo's base model (head_dim 64, which vLLM's
CPU attention needs) stands in for the teacher. Built as the tiny Idefics3, that teacher reads
the pictures: vLLM puts each picture's image tokens into its prompt."""

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


def test_vllm_teacher_reads_the_pictures(run_cli):
    """`curate --plugin vllm-distill` with the demo's base (the tiny Idefics3) and questions
    without captions: the teacher on vLLM is sent each row's picture, and vLLM puts the
    picture's image tokens into the prompt (what `prompt_tokens` counts). The run stops after
    distill (`run.stages`); the rest of the recipe through the pictures is
    tests/test_demo.py's."""
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    sets = ["source.train_per_family=4", "source.eval_per_family=2",
            "models.base.build.steps=10", "models.base.build.examples_per_family=8",
            "models.base.build.batch_size=8", 'models.base.path="base"',
            "distill.plugins.vllm-distill.max_tokens=16",
            'run.stages=["source", "distill"]']
    args = [arg for item in sets for arg in ("--set", item)]
    result = run_cli("--plugin", "vllm-distill", "run", "--out", "demo", "--no-report", *args)
    assert result.exit_code == 0, result.stderr[-3000:]
    run = result.cwd / "demo"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert [(s["name"], s["plugin"]) for s in manifest["stages"]] == [
        ("source", "synthetic"), ("distill", "vllm-distill")]
    base = result.cwd / "base"
    config = json.loads((base / "config.json").read_text())
    assert config["architectures"] == ["Idefics3ForConditionalGeneration"]

    from transformers import AutoProcessor

    from dualcurate import RunStore
    from dualcurate.recipe import load_recipe
    from dualcurate_synthetic.base_model import BaseModelConfig
    from dualcurate_vllm.distill import VLLMDistiller

    recipe = manifest["recipe"]
    # image tokens per picture, from the builder's options (image_size, patch_size)
    build = {k: v for k, v in load_recipe(None, sets).models["base"].build.items() if k != "use"}
    image_tokens = BaseModelConfig(**build).image_seq_len
    processor = AutoProcessor.from_pretrained(base)
    assert processor.image_seq_len == image_tokens
    # the teacher's prompts, rendered as the stage rendered them
    options = {k: v for k, v in recipe["distill"].items() if k not in ("kind", "use")}
    distiller = VLLMDistiller(options)

    def text_tokens(messages) -> int:
        """The prompt's tokens with its image parts left out (the text alone)."""
        text_only = [{**m, "content": [p for p in m["content"] if p["type"] == "text"]}
                     for m in messages]
        prompt = processor.apply_chat_template(text_only, tokenize=False,
                                               add_generation_prompt=True)
        return len(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    rows = RunStore(run, create=False).dataset("distill").to_list()
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 4 * len(recipe["source"]["families"])
    # no caption in the questions: the picture is the only way to the answer
    assert all(r["images"] and r["caption"] not in r["question"] for r in train)
    for row in train:
        messages = distiller.messages(row)
        sent = [p for m in messages for p in m["content"] if p["type"] == "image"]
        assert len(sent) == len(row["images"]) == 1
        least = text_tokens(messages) + image_tokens * len(row["images"])
        assert row["traces"]
        for trace in row["traces"]:
            assert trace["engine"] == "vllm" and trace["error"] is None
            assert trace["completion_tokens"] >= 1
            assert trace["prompt_tokens"] >= least, (trace["prompt_tokens"], least)
    assert all(not r["traces"] for r in rows if r["split"] == "eval")
