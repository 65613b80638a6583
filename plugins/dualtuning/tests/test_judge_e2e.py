"""The judge for real: a tiny causal LM (random weights) judged over two groups with the `sft`
trainer (LoRA, merged) and the `hf` engine, greedy, on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest

from dualcurate import Sample, Trace, rows_to_table
from dualcurate_dualtuning.judge import DualTuningJudge
from dualcurate_dualtuning.metrics import group_metrics

GROUPS = [("lucky", "Which number is lucky? Case {i}.", "7", "Lucky is 7."),
          ("colour", "What is the colour of the first shape? Case {i}.", "red",
           "The first shape is red.")]
TRAIN_OPTIONS = {"max_steps": 40, "learning_rate": 5e-3, "per_device_train_batch_size": 4}


def rows(per_group: int = 12, n_eval: int = 4) -> list[dict]:
    out = []
    for group, question, answer, why in GROUPS:
        for i in range(per_group):
            row = Sample(source="e2e", domain=group, question=question.format(i=i),
                         answer=answer).to_row()
            row["traces"] = [Trace(text=f"<think>{why}</think><answer>{answer}</answer>",
                                   reasoning=why, answer=answer, verdict="correct").model_dump()]
            row["split"] = "eval" if i < n_eval else "train"
            out.append(row)
    return out


@pytest.fixture
def real_context(stage_context, plugin_host, tiny_lm_dir, tmp_path):
    plugin_host.load("sft")
    plugin_host.load("hf")
    base = tmp_path / "base-model"
    shutil.copytree(tiny_lm_dir, base)
    return stage_context, base


def judge(base: Path, **overrides) -> DualTuningJudge:
    return DualTuningJudge(base_model=str(base), max_tokens_long=24,
                           trainer={"use": "sft", **TRAIN_OPTIONS},
                           engine={"use": "hf", "batch_size": 16},
                           **overrides)


def test_tiny_model_end_to_end(real_context):
    ctx, base = real_context
    result = judge(base).run(datasets.Dataset(rows_to_table(rows())), ctx)

    efficacy = json.loads((ctx.workdir / "efficacy.json").read_text())
    groups = {g["group"]: g for g in efficacy["groups"]}
    assert set(groups) == {"lucky", "colour"}
    for g in groups.values():
        assert (g["n_train"], g["n_eval"]) == (8, 4)
        assert all(0.0 <= g[k] <= 100.0 for k in ("B_S", "B_L", "DT_S", "DT_L"))
        # the dual model learned the answers the random base cannot give
        assert max(g["DT_S"], g["DT_L"]) > max(g["B_S"], g["B_L"])
        expected = group_metrics(g["group"], g["B_S"], g["B_L"], g["DT_S"], g["DT_L"])
        assert g["region"] == expected.region
        assert g["Gain_DA"] == pytest.approx(expected.Gain_DA, abs=1e-3)

    # LoRA by default, evaluated through the merged copy the trainer saved beside the adapter
    model = Path(result.artifacts["model"])
    assert model.name == "model-merged" and list(model.glob("*.safetensors"))
    assert (model.parent / "model" / "adapter_config.json").is_file()

    curated = result.dataset.to_list()
    mode_of = {"reasoning-benefit": "long", "direct-benefit": "short"}
    for row in curated:
        assert row["mode"] == mode_of[groups[row["domain"]]["region"]]
        assert row["split"] == "train"
    kept = [g for g in groups.values() if g["region"] != "detrimental"]
    assert len(curated) == 8 * len(kept)
    assert (ctx.workdir / "efficacy_scatter.svg").read_text().count('class="point"') == \
        len(groups)
    assert efficacy["estimate"]["agreement"] in (0.0, 0.5, 1.0)


@pytest.mark.slow
def test_tiny_model_validation_mode(real_context):
    ctx, base = real_context
    result = judge(base, validate=True).run(datasets.Dataset(rows_to_table(rows())), ctx)
    validation = result.report["validation"]
    for name, model in validation["models"].items():
        if "skipped" in model:
            assert name == "detrimental_only"
            continue
        assert Path(model["model"]).is_dir()
        assert {g["group"] for g in model["groups"]} == {"lucky", "colour"}
        assert model["mean_delta"] > 0, f"{name}: training on the data should beat the base"


@pytest.mark.slow
def test_tiny_vision_language_model_with_images(stage_context, plugin_host, tiny_llava_dir,
                                                tmp_path):
    """Images travel as store hashes through the S/L prompts into the trainer and the engine:
    the two groups share one question and differ only by the image's colour."""
    import io

    from PIL import Image

    plugin_host.load("sft")
    plugin_host.load("hf")
    base = tmp_path / "base-llava"
    shutil.copytree(tiny_llava_dir, base)

    def image(colour: str) -> str:
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
        return stage_context.images.put(buffer.getvalue())

    data = []
    for colour in ("red", "blue"):
        for i in range(12):
            row = Sample(source="e2e", domain=colour, images=[image(colour)],
                         question=f"What colour is the image? Case {i}.", answer=colour).to_row()
            row["traces"] = [Trace(reasoning=f"The image is {colour}.", answer=colour,
                                   verdict="correct").model_dump()]
            row["split"] = "eval" if i < 4 else "train"
            data.append(row)
    result = judge(base).run(datasets.Dataset(rows_to_table(data)), stage_context)
    for g in result.report["groups"]:
        assert max(g["DT_S"], g["DT_L"]) > max(g["B_S"], g["B_L"]), g
    assert all(row["images"] for row in result.dataset.to_list())
    # blind (on by default): both groups' images became the same grey blank, and their
    # questions are the same, so greedy decoding gives one answer for red and blue case i:
    # right for at most one of the two groups
    blind = {g["group"]: g["blind"] for g in result.report["groups"]}
    assert result.report["blind_evaluation"]["groups"] == ["red", "blue"]
    for key in ("B_S", "B_L", "DT_S", "DT_L"):
        assert blind["red"][key] + blind["blue"][key] <= 100.0, blind
