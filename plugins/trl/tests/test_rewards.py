"""The GRPO/GSPO reward: 0.9·accuracy (verifier) + 0.1·format, weights configurable."""

from __future__ import annotations

from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualcurate import StageContext, Verifier, hookimpl
from dualcurate_trl.rewards import (
    AccuracyReward,
    FormatReward,
    VerifierCheck,
    combined_reward,
    completion_text,
    format_score,
    recipe_verifier,
    reward_functions,
)
from dualcurate_trl.toy import answer_tag_check

GOOD = "<think>2 plus 2 is 4</think>\n<answer>4</answer>"
WRONG = "<think>2 plus 2 is 5</think>\n<answer>5</answer>"
UNFORMATTED = "the answer is 4"


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD, 1.0), (WRONG, 1.0), ("so \\boxed{4}", 1.0), (UNFORMATTED, 0.0),
    ("<answer>4</answer><think>x</think>", 0.0), ("<think>x</think> no answer tag", 0.0),
])
def test_format_score(text: str, expected: float) -> None:
    assert format_score(text) == expected


@given(st.text(max_size=60), st.text(max_size=60))
def test_format_score_accepts_any_wrapped_think_answer(a: str, b: str) -> None:
    assert format_score(f"<think>{a}</think>{b}<answer>{b}</answer>") == 1.0
    assert format_score(a) in (0.0, 1.0)


def test_combined_reward_weights() -> None:
    kw = {"check": answer_tag_check}
    assert combined_reward("4", GOOD, **kw) == pytest.approx(1.0)
    assert combined_reward("4", WRONG, **kw) == pytest.approx(0.1)
    assert combined_reward("4", "<answer>4</answer>", **kw) == pytest.approx(0.9)
    assert combined_reward("4", UNFORMATTED, **kw) == pytest.approx(0.0)
    assert combined_reward("4", GOOD, accuracy_weight=0.5, format_weight=0.5,
                           **kw) == pytest.approx(1.0)
    assert combined_reward("4", WRONG, accuracy_weight=0.5, format_weight=0.5,
                           **kw) == pytest.approx(0.5)


def test_trl_reward_functions_take_conversational_completions() -> None:
    funcs, weights = reward_functions(0.9, 0.1, check=answer_tag_check)
    assert weights == [0.9, 0.1]
    assert [f.__name__ for f in funcs] == ["accuracy", "format"]
    completions = [[{"role": "assistant", "content": GOOD}],
                   [{"role": "assistant", "content": [{"type": "text", "text": WRONG}]}]]
    accuracy, fmt = funcs
    assert accuracy(prompts=[[], []], completions=completions, answer=["4", "4"],
                    question=["2+2?", "2+2?"]) == [1.0, 0.0]
    assert fmt(prompts=[[], []], completions=completions) == [1.0, 1.0]
    assert completion_text(completions[1]) == WRONG


def test_zero_weights_are_left_out_and_both_zero_is_an_error() -> None:
    funcs, weights = reward_functions(1.0, 0.0, check=answer_tag_check)
    assert [f.__name__ for f in funcs] == ["accuracy"] and weights == [1.0]
    with pytest.raises(ValueError, match="both 0"):
        reward_functions(0.0, 0.0)


def test_accuracy_without_answer_column_says_so() -> None:
    with pytest.raises(ValueError, match="'answer' column"):
        AccuracyReward(answer_tag_check)(prompts=[[]], completions=[GOOD])
    assert FormatReward()(prompts=[[]], completions=[UNFORMATTED]) == [0.0]


@pytest.mark.parametrize(("gold", "response", "expected"), [
    ("4", GOOD, 1.0),
    ("4", WRONG, 0.1),
    ("4", "<answer>4</answer>", 0.9),
    ("4", "The result is \\boxed{4}", 1.0),
    ("4", UNFORMATTED.replace("4", "7"), 0.0),
])
def test_default_reward_uses_the_real_verifier(gold: str, response: str,
                                               expected: float) -> None:
    assert combined_reward(gold, response, question="What is 2 + 2?") == pytest.approx(expected)


def test_row_hints_reach_a_check_that_takes_them() -> None:
    seen: list[dict] = []

    def check_with_hints(gold, response, question=None, *, answer_type=None, choices=None):
        seen.append({"answer_type": answer_type, "choices": choices})
        return answer_tag_check(gold, response)

    reward = AccuracyReward(check_with_hints)
    out = reward(prompts=[[], []], completions=[GOOD, WRONG], answer=["4", "4"],
                 answer_type=["multiple_choice", None], choices=[["3", "4"], None])
    assert out == [1.0, 0.0]
    assert seen == [{"answer_type": "multiple_choice", "choices": ["3", "4"]},
                    {"answer_type": None, "choices": None}]
    # a check with the minimal contract signature gets no hints
    assert AccuracyReward(answer_tag_check)(prompts=[[]], completions=[GOOD], answer=["4"],
                                            answer_type=["number"], choices=[None]) == [1.0]


def test_multiple_choice_letter_is_checked_with_the_rows_choices() -> None:
    reward = AccuracyReward()
    out = reward(prompts=[[], []], completions=["<think>x</think><answer>B</answer>",
                                                "<think>x</think><answer>A</answer>"],
                 answer=["B", "B"], question=["Pick", "Pick"],
                 answer_type=["multiple_choice"] * 2, choices=[["cat", "dog"]] * 2)
    assert out == [1.0, 0.0]


def test_the_default_accuracy_reward_uses_the_rule_verify_stage() -> None:
    """No check given: the reward goes through the registered ``rule-verify`` stage (answer
    rules only: no think block needed), not through a direct call of a function."""
    from dualcurate_verify.stage import RuleVerifier

    check = AccuracyReward().check
    assert isinstance(check, VerifierCheck) and check.name == "rule-verify"
    stage = check.stage()
    assert isinstance(stage, RuleVerifier) and stage.answer_only
    assert check("4", "so \\boxed{4}").verdict == "correct"  # rule-verify would want <think>


class CountingVerifier(Verifier):
    """Marks a trace correct when its text ends with the gold; records every batch."""

    name = "counting-verify"
    requires = ("answer",)
    provides = ("traces",)
    batches: ClassVar[list[int]] = []

    def process(self, rows, ctx):
        type(self).batches.append(len(rows))
        out = []
        for row in rows:
            traces = [{**t, "verdict": "correct" if t["text"].endswith(row["answer"])
                       else "incorrect", "method": "counting"} for t in row["traces"]]
            out.append({**row, "traces": traces})
        return out


class CountingPlugin:
    @hookimpl
    def dualcurate_register_verifiers(self, register):
        register(CountingVerifier)


def test_the_recipes_verifier_scores_the_reward(tmp_path, plugin_host, register_plugin) -> None:
    """With a run context, the accuracy reward uses the verifier stage the run's recipe
    configured (its manifest), by registered name, one batch per reward call."""
    register_plugin(CountingPlugin(), name="counting-verify")
    ctx = StageContext.ephemeral("grpo", root=tmp_path / "run", host=plugin_host)
    ctx.store.manifest["recipe"] = {"run": {}, "verify": {"kind": "verifier",
                                                          "use": "counting-verify"}}
    CountingVerifier.batches.clear()
    funcs, _ = reward_functions(1.0, 0.0, ctx=ctx)
    out = funcs[0](prompts=[[]] * 3, completions=["it is 4", "it is 5", "\\boxed{4}"],
                   answer=["4", "4", "4"])
    assert out == [1.0, 0.0, 0.0]  # counting-verify's rule, not rule-verify's
    assert CountingVerifier.batches == [3]
    # no verifier stage in the recipe: rule-verify
    assert recipe_verifier(StageContext.ephemeral("x", root=tmp_path / "r2")) == \
        ("rule-verify", {})
    # a verifier named explicitly wins
    named = AccuracyReward(verifier="counting-verify", ctx=ctx)
    assert named.check.name == "counting-verify"
