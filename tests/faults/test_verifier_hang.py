"""Item 8: an answer whose symbolic check never ends (a power tower) is decided within the time
budget as "undecided (timeout)", in the rule-verify stage and in the GRPO accuracy reward that
feeds RL, and the verifier's worker pool keeps answering the checks that follow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dualcurate import StageContext

pytestmark = pytest.mark.faults

TOWER = "\\boxed{9^{9^{9^{9}}}}"  # 9^(9^387420489): sympy would work on it for ever
SYMBOLIC = [("x^2+2x+1", "(x+1)^2"), ("\\sqrt{8}", "2\\sqrt{2}"),
            ("\\frac{\\pi}{3}", "\\frac{2\\pi}{6}"), ("2x+3", "3+2x"),
            ("\\sin^2 y + \\cos^2 y", "1"), ("(a+b)^2", "a^2+2ab+b^2")]
# A fresh math-verify worker's first check takes ~0.7 s on the 2-core CI machine (sympy's
# parser warms up on first use), so the budget leaves room for that.
BUDGET = 3.0
GENEROUS = 30.0  # seconds: a hang would never end; a decided check ends near the budget


def rows() -> list[dict]:
    out = [{"id": "tower", "question": "Evaluate.", "answer": "1",
            "traces": [{"text": f"<think>Towers.</think>{TOWER}", "finish_reason": "stop"}]}]
    for i, (gold, response) in enumerate(SYMBOLIC):
        out.append({"id": f"ok-{i}", "question": "Simplify.", "answer": gold,
                    "answer_type": "expression",
                    "traces": [{"text": f"<think>Algebra.</think>\\boxed{{{response}}}",
                                "finish_reason": "stop"}]})
    return out


def test_rule_verify_decides_a_hang_within_the_budget_and_keeps_working(tmp_path: Path):
    from dualcurate_verify.stage import RuleVerifier

    ctx = StageContext.ephemeral("verify", root=tmp_path / "run")
    stage = RuleVerifier({"symbolic_timeout": BUDGET, "workers": 2})
    stage.setup(ctx)
    start = time.monotonic()
    out = stage.process(rows(), ctx)
    elapsed = time.monotonic() - start
    print(f"\nitem 8: rule-verify over 1 power tower + {len(SYMBOLIC)} symbolic checks "
          f"(budget {BUDGET:g} s): {elapsed:.1f} s")
    tower = out[0]["traces"][0]
    assert (tower["verdict"], tower["label"]) == ("undecided", "timeout")
    assert "timeout" in tower["reason"]
    assert [r["traces"][0]["verdict"] for r in out[1:]] == ["correct"] * len(SYMBOLIC)
    assert elapsed < GENEROUS
    # and again: the replaced worker answers the next batch
    again = stage.process(rows()[1:], ctx)
    assert [r["traces"][0]["verdict"] for r in again] == ["correct"] * len(SYMBOLIC)
    ctx.cache.close()


def test_grpo_accuracy_reward_survives_a_hang():
    """The reward RL trains on: 0 for the tower (undecided is not correct), 1 for the rest."""
    from dualcurate_trl.rewards import AccuracyReward

    completions = [[{"role": "assistant", "content": f"<think>t</think>{TOWER}"}]] + [
        [{"role": "assistant", "content": f"<think>t</think>\\boxed{{{r}}}"}] for _, r in SYMBOLIC]
    golds = ["1"] + [g for g, _ in SYMBOLIC]
    start = time.monotonic()
    scores = AccuracyReward()(prompts=[None] * len(golds), completions=completions, answer=golds)
    elapsed = time.monotonic() - start
    print(f"\nitem 8: GRPO accuracy reward over the same batch (default budget): {elapsed:.1f} s")
    assert scores == [0.0] + [1.0] * len(SYMBOLIC)
    assert elapsed < GENEROUS


HUGE = {"200k open braces": "{" * 200_000,
        "50k nested boxes": "\\boxed{" * 50_000 + "42" + "}" * 50_000,
        "50k alternatives": " or ".join(["41"] * 50_000) + " or 42",
        "100k dollars": "$" * 100_000 + "42",
        "50k answer tags": "<answer>" * 50_000 + "42" + "</answer>" * 50_000,
        "100k letters": "A, " * 100_000}


@pytest.mark.parametrize("kind", list(HUGE))
def test_huge_adversarial_responses_are_decided_quickly_and_never_correct(kind: str) -> None:
    from dualcurate_verify import check

    start = time.monotonic()
    result = check("42", HUGE[kind], budget=BUDGET)
    elapsed = time.monotonic() - start
    print(f"\nitem 8: {kind}: {result.verdict} ({result.label}) in {elapsed:.2f} s")
    assert result.verdict != "correct"
    assert elapsed < GENEROUS
