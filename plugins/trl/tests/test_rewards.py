"""The GRPO/GSPO reward: 0.9·accuracy (verifier) + 0.1·format, weights configurable."""

from __future__ import annotations

import importlib.util

import pytest
from dualcurate_trl.rewards import (
    AccuracyReward,
    FormatReward,
    combined_reward,
    completion_text,
    format_score,
    reward_functions,
)
from dualcurate_trl.toy import answer_tag_check
from hypothesis import given
from hypothesis import strategies as st

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


def _verify_check():
    if importlib.util.find_spec("dualcurate_verify") is None:
        return None
    import dualcurate_verify

    return getattr(dualcurate_verify, "check", None)


@pytest.mark.skipif(_verify_check() is None,
                    reason="dualcurate_verify.check not built yet (plugins/verify)")
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
