"""Evaluation scores answers through a verifier stage made by registered name: the recipe's
verifier (the run's manifest), ``rule-verify`` when the recipe has none."""

from __future__ import annotations

from typing import ClassVar

from dualcurate import Verifier, hookimpl
from dualcurate_dualtuning.data import LONG, SHORT
from dualcurate_dualtuning.evaluate import VerifierScorer, evaluate_model, recipe_verifier
from dualcurate_dualtuning.judge import DualTuningConfig

SCRIPT = {"base": {"math": {"S": 1, "L": 3}}}


class EverythingCorrect(Verifier):
    """A verifier that passes every trace and records its batches (a stand-in judge)."""

    name = "everything-correct"
    requires = ("answer",)
    provides = ("traces",)
    batches: ClassVar[list[int]] = []

    def process(self, rows, ctx):
        type(self).batches.append(len(rows))
        return [{**row, "traces": [{**t, "verdict": "correct", "method": "stub"}
                                   for t in row["traces"]]} for row in rows]


class EverythingCorrectPlugin:
    @hookimpl
    def dualcurate_register_verifiers(self, register):
        register(EverythingCorrect)


def _evaluate(ctx, rows):
    cfg = DualTuningConfig(base_model="base-model", engine={"use": "scripted", "script": SCRIPT})
    return evaluate_model(ctx, cfg.engine, "base-model", {"math": rows}, cfg.prompts(),
                          {SHORT: 32, LONG: 64}, seed=0)


def test_default_is_the_rule_verify_stage(scripted, stage_context, make_rows):
    assert recipe_verifier(stage_context) == ("rule-verify", {})
    rows = [r for r in make_rows({"math": 4}, eval_rows=None)]
    scores = _evaluate(stage_context, rows)
    # the scripted model answers 1 of 4 directly and 3 of 4 with reasoning, in <answer> tags
    assert scores.accuracy["math"] == {"S": 25.0, "L": 75.0}
    assert "rule-verify" in stage_context.host.names("verifier")  # loaded by name on first need


def test_the_recipes_verifier_scores_the_evaluation(scripted, stage_context, make_rows,
                                                    register_plugin):
    register_plugin(EverythingCorrectPlugin(), name="everything-correct")
    stage_context.store.manifest["recipe"] = {
        "run": {}, "verify": {"kind": "verifier", "use": "everything-correct"}}
    EverythingCorrect.batches.clear()
    rows = [r for r in make_rows({"math": 4}, eval_rows=None)]
    scores = _evaluate(stage_context, rows)
    assert scores.accuracy["math"] == {"S": 100.0, "L": 100.0}
    assert EverythingCorrect.batches == [4, 4]  # one batch per mode


def test_the_scorer_skips_structure_rules(stage_context):
    scorer = VerifierScorer(stage_context)
    row = {"id": "r", "question": "2+2?", "answer": "4"}
    assert scorer(row, "so \\boxed{4}")  # rule-verify's stage would want a think block
    assert not scorer(row, "<think>x</think>5")
    scorer.close()
