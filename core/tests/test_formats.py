"""dualcurate.formats: rendering and the one split rule of the trace format."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualcurate.formats import (
    TAGS,
    THINK_CLOSE,
    THINK_OPEN,
    is_long_form,
    last_answer,
    render_answer,
    render_mode_prompt,
    render_think,
    render_trace,
    split_think,
    split_trace,
    strip_reasoning,
)

# text without any tag, nor a tag's beginning at its end (which would complete one when glued
# to the next part)
plain = st.text(max_size=60).filter(
    lambda s: not any(t in s for t in TAGS)
    and not any(s.endswith(t[:i]) for t in TAGS for i in range(1, len(t))))
# text made mostly of tags, to reach every branch of the split
tagged = st.lists(st.sampled_from([*TAGS, "a", "4", " ", "\n"]), max_size=14).map("".join)


@given(plain, plain)
def test_render_then_split_round_trips(reasoning: str, answer: str) -> None:
    text = render_trace(reasoning, answer)
    assert split_think(text) == (reasoning, "\n" + render_answer(answer))
    assert split_trace(text) == (reasoning.strip(), answer.strip())
    assert split_trace(render_answer(answer)) == ("", answer.strip())
    assert strip_reasoning(text) == render_answer(answer)
    assert is_long_form(text) and not is_long_form(render_answer(answer))


def test_rendered_bytes() -> None:
    assert render_trace("r", "a") == "<think>r</think>\n<answer>a</answer>"
    assert render_answer("a") == "<answer>a</answer>"
    assert render_think("r", " so 4") == "<think>r</think> so 4"
    assert render_mode_prompt("q?", "Answer directly.") == "Answer directly.\n\nq?"
    assert render_mode_prompt("q?", "") == "q?"


@pytest.mark.parametrize(("text", "think", "trace"), [
    # no think block: everything is the rest
    ("<answer>4</answer>", (None, "<answer>4</answer>"), ("", "4")),
    ("plain text", (None, "plain text"), ("", "")),
    # the chat template opened the block: everything before </think> is reasoning
    ("r</think>\n<answer>4</answer>", ("r", "\n<answer>4</answer>"), ("r", "4")),
    # truncated inside the think block: all reasoning, no answer
    ("<think>so far <answer>4</answer>", ("so far <answer>4</answer>", None),
     ("so far <answer>4</answer>", "")),
    # several answers after the block: the last wins; one inside the block never counts
    ("<think><answer>1</answer></think><answer>2</answer> or <answer>3</answer>",
     ("<answer>1</answer>", "<answer>2</answer> or <answer>3</answer>"),
     ("<answer>1</answer>", "3")),
    # the first </think> closes the block; a second one is text of the rest
    ("<think>a</think><answer>3</answer></think><answer>5</answer>",
     ("a", "<answer>3</answer></think><answer>5</answer>"), ("a", "5")),
    # text before <think> is dropped; a </think> before it closes nothing
    ("pre <think>a</think> post", ("a", " post"), ("a", "")),
    ("x</think>y<think>z", ("z", None), ("z", "")),
    # whitespace is kept by split_think, stripped by split_trace
    ("<think>\n r \n</think>\n<answer> 4 \n</answer>\n", ("\n r \n", "\n<answer> 4 \n</answer>\n"),
     ("r", "4")),
    # an answer tag that never closes is no answer
    ("<think>a</think> so <answer>4", ("a", " so <answer>4"), ("a", "")),
    ("", (None, ""), ("", "")),
])
def test_split_cases(text: str, think: tuple[str | None, str | None],
                     trace: tuple[str, str]) -> None:
    assert split_think(text) == think
    assert split_trace(text) == trace


def test_strip_reasoning() -> None:
    assert strip_reasoning("<think>hmm</think>\nA chart.") == "A chart."
    assert strip_reasoning("  A chart. ") == "A chart."
    assert strip_reasoning("hmm</think> A chart.") == "A chart."
    assert strip_reasoning("<think>still thinking") == ""
    assert strip_reasoning("<think>a</think> A chart.</think> more") == "A chart.</think> more"


@given(tagged | st.text(max_size=200))
def test_split_is_total_and_the_rest_is_a_suffix(text: str) -> None:
    reasoning, rest = split_think(text)
    if rest is not None:
        assert text.endswith(rest)
        if reasoning is not None:
            # the rest starts right after the first </think> that closes the block
            assert text[:len(text) - len(rest)].endswith(reasoning + THINK_CLOSE)
            assert THINK_CLOSE not in reasoning
    else:
        assert THINK_OPEN in text and reasoning is not None and THINK_CLOSE not in reasoning
    expected = (last_answer(rest) or "") if rest is not None else ""
    assert split_trace(text)[1] == expected.strip()


@given(tagged)
def test_is_long_form_is_the_format_rewards_regex(text: str) -> None:
    # the GRPO format reward's former regex: is_long_form replaced it with the same verdicts
    regex = re.compile(r"<think>.*?</think>.*?<answer>.*?</answer>", re.DOTALL)
    assert is_long_form(text) == bool(regex.search(text))

