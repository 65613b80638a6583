"""Real parts: the default verifier (the ``rule-verify`` stage, by registered name) and a tiny
model through the ``hf`` engine."""

from __future__ import annotations

import pytest

from dualcurate import StageContext
from dualcurate.recipe import check_refs
from dualcurate_difficulty.filter import DifficultyFilter
from dualcurate_difficulty.scripted import make_rows, scripted_options, scripted_plugin


def test_default_verifier_is_the_rule_verify_stage(stage_context: StageContext,
                                                  register_plugin) -> None:
    register_plugin(scripted_plugin, name="scripted")
    rows = make_rows(3)
    patterns = [[True, False, True, False], [False] * 4, [True] * 4]
    stage = DifficultyFilter({"engine": {"use": "scripted", **scripted_options(rows, patterns)},
                              "samples_per_question": 4, "adaptive": False})
    assert stage.check_fn is None
    stage.setup(stage_context)
    out = stage.process(rows, stage_context)
    stage.teardown()
    assert "rule-verify" in stage_context.host.names("verifier")  # loaded by name, on first need
    assert [r["pass_rate"] for r in out] == [0.5, 0.0, 1.0]
    assert [r["keep"] for r in out] == [False, True, False]
    traces = out[0]["rollouts"]
    assert [t["verdict"] for t in traces] == ["correct", "incorrect", "correct", "incorrect"]
    assert {t["method"] for t in traces} == {"rule"}
    assert traces[1]["answer"] == str(int(rows[0]["answer"]) + 1)


@pytest.fixture
def hf_host(plugin_host, register_plugin):
    from dualcurate_hf import plugin as hf_plugin

    register_plugin(hf_plugin.hf_engine, name="hf")
    return plugin_host


def test_tiny_model_through_hf_engine(hf_host, stage_context: StageContext,
                                      tiny_lm_dir) -> None:
    rows = make_rows(3)
    config = {"engine": {"use": "hf", "model": str(tiny_lm_dir), "batch_size": 4}, "samples_per_question": 3,
              "max_tokens": 6, "keep": "nontrivial"}
    adaptive = DifficultyFilter(config)
    assert check_refs(adaptive.config, hf_host) == [] and adaptive.preflight(hf_host) == []
    adaptive.setup(stage_context)
    first = adaptive.process(rows, stage_context)
    adaptive.teardown()
    used = sum(r["pass_drawn"] for r in first)
    assert used < 3 * len(rows)  # a random tiny model is never right: the first rollout settles
    assert stage_context.stats.sent == used
    for row in first:
        assert 1 <= row["pass_drawn"] <= 3
        for i, trace in enumerate(row["rollouts"]):
            assert trace["engine"] == "hf" and trace["model"] == str(tiny_lm_dir)
            assert trace["sample_index"] == i
            assert trace["completion_tokens"] > 0
            assert trace["verdict"] in ("correct", "incorrect", "invalid", "undecided")
    # switching adaptive off reuses every adaptive rollout from the request cache
    full = DifficultyFilter({**config, "adaptive": False})
    full.setup(stage_context)
    second = full.process(rows, stage_context)
    report = full.finish(stage_context)
    full.teardown()
    assert stage_context.stats.cached == used
    assert stage_context.stats.sent == 3 * len(rows)
    assert [r["keep"] for r in second] == [r["keep"] for r in first]
    for a, f in zip(first, second, strict=True):
        assert [t["text"] for t in a["rollouts"]] == \
            [t["text"] for t in f["rollouts"][:a["pass_drawn"]]]
    assert (stage_context.workdir / "pass_rate_histogram.svg").exists()
    assert report["samples"] == len(rows) and report["rollouts_full_k"] == 3 * len(rows)
