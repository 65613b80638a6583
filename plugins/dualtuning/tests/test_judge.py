"""The judge's plumbing with a scripted engine and a recording trainer (fast, no torch)."""

from __future__ import annotations

import json

import datasets
import pytest
from pydantic import ValidationError

from dualcurate import DualcurateError, rows_to_table
from dualcurate.testing.contracts import EfficacyJudgeContract
from dualcurate_dualtuning import plugin
from dualcurate_dualtuning.judge import DualTuningJudge

# base: math 2/4 in both modes; spatial 2/4 direct, 1/4 reasoning.
# trained: math 1/4 direct, 4/4 reasoning (reasoning-benefit);
#          spatial 4/4 direct, 2/4 reasoning (direct-benefit).
SCRIPT = {"base": {"math": {"S": 2, "L": 2}, "spatial": {"S": 2, "L": 1}},
          "trained": {"math": {"S": 1, "L": 4}, "spatial": {"S": 4, "L": 2}}}
GROUP_KEYS = {"group", "B_S", "B_L", "DT_S", "DT_L", "Gain_DA", "Gain_CoT", "GAP_B", "GAP_DT",
              "region", "n_train", "n_eval", "blind"}


def judge(engine: dict | None = None, trainer: dict | None = None,
          **overrides) -> DualTuningJudge:
    """The judge on the scripted engine and the recording trainer; ``engine`` and ``trainer``:
    options of each over the defaults."""
    config = {"base_model": "base-model",
              "engine": {"use": "scripted", "script": SCRIPT, **(engine or {})},
              "trainer": {"use": "recording", **(trainer or {})},
              "eval_fraction": 0.5, **overrides}
    return DualTuningJudge(config)


def dataset(rows) -> datasets.Dataset:
    return datasets.Dataset(rows_to_table(rows))


def test_regions_outputs_and_curated_rows(scripted, stage_context, make_rows):
    engine, trainer = scripted
    rows = make_rows({"math": 8, "spatial": 8})
    result = judge().run(dataset(rows), stage_context)

    groups = {g["group"]: g for g in result.report["groups"]}
    assert all(set(g) == GROUP_KEYS for g in groups.values())
    math, spatial = groups["math"], groups["spatial"]
    assert (math["B_S"], math["B_L"], math["DT_S"], math["DT_L"]) == (50.0, 50.0, 25.0, 100.0)
    assert (math["Gain_DA"], math["Gain_CoT"], math["region"]) == (-50.0, 100.0,
                                                                     "reasoning-benefit")
    assert (spatial["B_S"], spatial["B_L"], spatial["DT_S"], spatial["DT_L"]) == \
        (50.0, 25.0, 100.0, 50.0)
    assert (spatial["Gain_DA"], spatial["Gain_CoT"], spatial["region"]) == (100.0, 0.0,
                                                                           "direct-benefit")
    assert (math["n_train"], math["n_eval"]) == (4, 4)
    # text-only rows: no blind evaluation, and it says why
    assert math["blind"] is None and spatial["blind"] is None
    assert result.report["blind_evaluation"]["skipped"] == {
        "math": "no images in its eval rows", "spatial": "no images in its eval rows"}

    efficacy = json.loads((stage_context.workdir / "efficacy.json").read_text())
    assert efficacy["groups"] == result.report["groups"]
    svg = (stage_context.workdir / "efficacy_scatter.svg").read_text()
    assert svg.startswith("<?xml") and svg.count('class="point"') == 2
    assert result.artifacts["efficacy"] == str(stage_context.workdir / "efficacy.json")

    # curated: training rows only; math as L, spatial as S, in input order
    curated = result.dataset.to_list()
    assert len(curated) == 8
    assert {(r["domain"], r["mode"], r["efficacy_region"]) for r in curated} == {
        ("math", "long", "reasoning-benefit"), ("spatial", "short", "direct-benefit")}
    order = [r["id"] for r in rows]
    assert [r["id"] for r in curated] == sorted((r["id"] for r in curated), key=order.index)
    assert set(result.dataset.column_names) >= set(dataset(rows).column_names)

    # one dual model trained on S ∪ L of the training rows, from the base model
    assert len(trainer.calls) == 1
    call = trainer.calls[0]
    assert call["base"] == "base-model"
    examples = call["rows"]
    assert len(examples) == 16
    assert sorted(e["mode"] for e in examples) == ["long"] * 8 + ["short"] * 8
    train_ids = {r["id"] for r in curated}
    assert {e["id"] for e in examples} == train_ids
    by_id = {r["id"]: r for r in rows}
    for e in examples:
        row = by_id[e["id"]]
        user = e["prompt"][-1]
        assert user["role"] == "user"
        text = next(p["text"] for p in user["content"] if p["type"] == "text")
        completion = e["completion"][0]["content"][0]["text"]
        if e["mode"] == "short":
            assert text.startswith("Answer directly.")
            assert completion == f"<answer>{row['answer']}</answer>"
        else:
            assert text.startswith("Think step by step.")
            reasoning = row["traces"][1]["reasoning"]  # the verified one, never the wrong one
            assert completion == f"<think>{reasoning}</think>\n<answer>{row['answer']}</answer>"

    # base and dual model, both modes, greedy, on eval rows only
    assert {c["model"] for c in engine.calls} == {"base-model", str(result.artifacts["model"])}
    assert all(c["temperature"] == 0.0 for c in engine.calls)
    assert len(engine.calls) == 2 * 2 * 8
    short_budget = {c["max_tokens"] for c in engine.calls if not c["long"]}
    assert short_budget == {max(32, len("<answer>99</answer>") + 16)}
    assert {c["max_tokens"] for c in engine.calls if c["long"]} == {1024}

    estimate = {g["group"]: g for g in result.report["estimate"]["groups"]}
    assert estimate["math"]["region_estimate"] == "direct-benefit"  # a tie in the base
    assert estimate["spatial"]["region_estimate"] == "direct-benefit"
    assert result.report["estimate"]["agreement"] == 0.5


def test_detrimental_groups_are_dropped(scripted, stage_context, make_rows):
    script = {"base": {"math": {"S": 2, "L": 2}, "spatial": {"S": 2, "L": 2}},
              "trained": {"math": {"S": 1, "L": 2}, "spatial": {"S": 4, "L": 1}}}
    result = judge(engine={"script": script}).run(
        dataset(make_rows({"math": 8, "spatial": 8})), stage_context)
    regions = {g["group"]: g["region"] for g in result.report["groups"]}
    assert regions == {"math": "detrimental", "spatial": "direct-benefit"}
    assert {r["domain"] for r in result.dataset.to_list()} == {"spatial"}
    assert result.report["curated"]["dropped_detrimental"] == 4


def test_split_column_and_eval_rows_option(scripted, stage_context, make_rows):
    rows = make_rows({"math": 12, "spatial": 12}, eval_rows=4)
    result = judge(include_eval_rows=True).run(dataset(rows), stage_context)
    groups = {g["group"]: g for g in result.report["groups"]}
    assert (groups["math"]["n_train"], groups["math"]["n_eval"]) == (8, 4)
    assert result.report["eval_split"] == {"math": "column", "spatial": "column"}
    assert len(result.dataset) == 24
    assert sorted(result.dataset["split"]).count("eval") == 8


def test_seeded_split_without_split_column(scripted, stage_context, make_rows):
    rows = make_rows({"math": 10, "spatial": 3}, eval_rows=None)
    result = judge(eval_fraction=0.3).run(dataset(rows), stage_context)
    groups = {g["group"]: g for g in result.report["groups"]}
    assert (groups["math"]["n_train"], groups["math"]["n_eval"]) == (7, 3)
    assert (groups["spatial"]["n_train"], groups["spatial"]["n_eval"]) == (2, 1)
    assert result.report["eval_split"] == {"math": "seeded", "spatial": "seeded"}


def test_long_rows_without_verified_trace_are_not_curated_as_long(scripted, stage_context, make_rows):
    rows = make_rows({"math": 8, "spatial": 8})
    for row in rows[4:6]:  # two math training rows lose their verified trace
        row["traces"] = [t for t in row["traces"] if t["verdict"] != "correct"]
    result = judge().run(dataset(rows), stage_context)
    curated = [r for r in result.dataset.to_list() if r["domain"] == "math"]
    assert [r["id"] for r in curated] == [r["id"] for r in rows[6:8]]
    assert all(r["mode"] == "long" for r in curated)
    assert result.report["curated"]["dropped_no_verified_trace"] == 2
    assert result.report["groups"][0]["region"] == "reasoning-benefit"


def test_rerun_reuses_the_trained_model(scripted, stage_context, make_rows):
    _, trainer = scripted
    data = dataset(make_rows({"math": 8, "spatial": 8}))
    first = judge().run(data, stage_context)
    second = judge().run(data, stage_context)
    assert len(trainer.calls) == 1
    assert second.report["groups"] == first.report["groups"]
    other = judge(trainer={"epochs": 2}).run(data, stage_context)
    assert len(trainer.calls) == 2
    assert other.artifacts["model"] != first.artifacts["model"]


def test_validation_mode_trains_and_compares_three_models(scripted, stage_context, make_rows):
    _, trainer = scripted
    script = {"base": {"math": {"S": 2, "L": 2}, "spatial": {"S": 2, "L": 2},
                       "chart": {"S": 2, "L": 2}},
              "trained": {"math": {"S": 1, "L": 4}, "spatial": {"S": 4, "L": 1},
                          "chart": {"S": 1, "L": 1}}}
    result = judge(engine={"script": script}, validate=True).run(
        dataset(make_rows({"math": 8, "spatial": 8, "chart": 8})), stage_context)
    validation = result.report["validation"]
    models = validation["models"]
    assert set(models) == {"curated", "everything", "detrimental_only"}
    assert models["curated"]["trained_on"] == {"math": "long", "spatial": "short"}
    assert models["detrimental_only"]["trained_on"] == {"chart": "long"}
    assert len(trainer.calls) == 4
    curated = {g["group"]: g for g in models["curated"]["groups"]}
    assert curated["math"]["delta"] == 50.0 and curated["chart"]["delta"] == 0.0
    assert models["detrimental_only"]["mean_delta"] < models["curated"]["mean_delta"]
    assert json.loads((stage_context.workdir / "efficacy.json").read_text())["validation"] \
        == validation


def test_missing_group_column_is_named(scripted, stage_context, make_rows):
    with pytest.raises(DualcurateError, match="group_by='task'"):
        judge(group_by="task").run(dataset(make_rows({"math": 4})), stage_context)


def test_identical_prompts_do_not_validate():
    with pytest.raises(ValidationError, match="nothing selects the mode"):
        judge(user_prefix_long="Answer directly.")


class TestDualTuningContract(EfficacyJudgeContract):
    stage_cls = DualTuningJudge
    plugin = plugin.dual_tuning
    config = {"base_model": "base-model", "trainer": "recording",
              "engine": {"use": "scripted", "script": {
                  t: {g: {"S": 2, "L": 2} for g in ("math", "perception")}
                  for t in ("base", "trained")}}}

    @pytest.fixture(autouse=True)
    def _scripted(self, scripted):
        return scripted

    def _run(self, ctx):
        # the contract's default rows ask "What is i + i?"; tag them the scripted way
        from dualcurate.testing import contracts

        rows = contracts.default_rows()
        for i, row in enumerate(rows):
            row["question"] = f"[{row['domain']}#{i}] What is {i} + {i}?"
        self.input_rows = rows
        return super()._run(ctx)


def test_seeded_split_is_deterministic_and_order_free(make_rows):
    from dualcurate_dualtuning.data import split_groups

    rows = make_rows({"math": 20, "chart": 5}, eval_rows=None)

    def held(rows, seed):
        return {s.group: sorted(r["id"] for r in s.eval)
                for s in split_groups(rows, "domain", 0.25, 1, 4, seed)}

    first = held(rows, 0)
    assert first == held(list(reversed(rows)), 0)
    assert [len(first["math"]), len(first["chart"])] == [4, 1]  # eval_max=4 caps math
    assert held(rows, 1) != first


def test_runs_as_the_judge_stage_of_a_recipe(scripted, plugin_host, register_plugin, tmp_path):
    from dualcurate import Pipeline, load_recipe

    register_plugin(plugin.dual_tuning, name="dual-tuning")
    recipe = {"run": {"shard_size": 5, "seed": 3},
              "source": {"use": "sum-rows"},
              "judge": {"use": "dual-tuning", "base_model": "base-model",
                        "plugins": {"dual-tuning": {"engine": {"use": "scripted",
                                                               "script": SCRIPT},
                                                    "trainer": "recording",
                                                    "validate": True}}}}
    store = Pipeline(load_recipe(recipe), host=plugin_host).run(tmp_path / "run")
    record = store.stage_record("judge")
    assert record["status"] == "done"
    assert {g["group"]: g["region"] for g in record["report"]["groups"]} == {
        "math": "reasoning-benefit", "spatial": "direct-benefit"}
    assert "validation" in record["report"]
    assert record["rows_in"] == 16 and record["rows_out"] == 8
    curated = store.dataset("judge")
    assert sorted(set(curated["mode"])) == ["long", "short"]
    assert (store.artifacts_dir("judge") / "efficacy.json").is_file()
    assert record["artifacts"]["scatter"].endswith("efficacy_scatter.svg")


def test_failed_and_truncated_responses_are_reported(scripted, stage_context, make_rows):
    options = {"script": SCRIPT, "fail_groups": ["spatial"], "finish_reason": "length"}
    result = judge(engine=options).run(dataset(make_rows({"math": 8, "spatial": 8})),
                                               stage_context)
    groups = {g["group"]: g for g in result.report["groups"]}
    # a failed request counts as wrong: spatial scores 0 everywhere, so nothing to gain
    assert [groups["spatial"][k] for k in ("B_S", "B_L", "DT_S", "DT_L")] == [0.0] * 4
    assert groups["spatial"]["region"] == "detrimental"
    assert result.report["failed_requests"] == 16
    assert result.report["truncated"]["base"] == {"S": 4, "L": 4}
    warnings = " ".join(result.report["warnings"])
    assert "max_tokens_short=" in warnings and "8 request(s) failed" in warnings


def test_same_examples_reuse_one_model(scripted, stage_context, make_rows):
    _, trainer = scripted
    script = {"base": {"math": {"S": 2, "L": 2}, "spatial": {"S": 2, "L": 2}},
              "trained": {"math": {"S": 1, "L": 4}, "spatial": {"S": 1, "L": 1}}}
    result = judge(engine={"script": script}, validate=True,
                   validate_everything_mode="dual").run(
        dataset(make_rows({"math": 8, "spatial": 8})), stage_context)
    models = result.report["validation"]["models"]
    assert models["everything"]["model"] == result.artifacts["model"]  # S ∪ L of everything
    # trained: dual (= everything), curated (math L), detrimental-only (spatial, dual)
    assert len(trainer.calls) == 3
    assert trainer.calls[0]["base"] == "base-model"


def test_no_verified_traces_is_a_warning(scripted, stage_context, make_rows):
    result = judge().run(dataset(make_rows({"math": 8, "spatial": 8}, traces=False)),
                         stage_context)
    assert any("no training row has a verified trace" in w for w in result.report["warnings"])
    assert all(r["mode"] == "short" for r in result.dataset.to_list())
