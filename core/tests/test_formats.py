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
    # a </think> with no <think> after it is quoted reasoning: the block closes at the last one
    ("<think>a</think><answer>3</answer></think><answer>5</answer>",
     ("a</think><answer>3</answer>", "<answer>5</answer>"), ("a</think><answer>3</answer>", "5")),
    # a response that does not begin with <think> has its block opened by the chat template:
    # a later <think> is quoted reasoning, nothing before it is dropped
    ("pre <think>a</think> post", ("pre <think>a", " post"), ("pre <think>a", "")),
    # ... and a <think> after its close opens a second block, in the rest
    ("x</think>y<think>z", ("x", "y<think>z"), ("x", "")),
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
    # a thinking captioner that quotes the tags: its caption is what follows the last close
    assert strip_reasoning("I think in <think></think>, then after </think> the caption.\n"
                           "</think>\nA chart.") == "A chart."
    assert strip_reasoning("<think>a</think> A chart.<think>b</think> more") == \
        "A chart.<think>b</think> more"


def _first_close_split(text: str) -> tuple[str | None, str | None]:
    """The former rule (vLLM's partitions): open at the first <think>, close at the first
    </think> after it. Ordinary responses must split the same way under the current rule."""
    if THINK_OPEN not in text and THINK_CLOSE not in text:
        return None, text
    _, opened, after = text.partition(THINK_OPEN)
    body = after if opened else text
    reasoning, closed, rest = body.partition(THINK_CLOSE)
    return (reasoning, rest) if closed else (body, None)


blank = st.text(" \n\t", max_size=3)


@given(blank, plain, plain | plain.map(lambda a: "\n" + render_answer(a)),
       st.sampled_from(["model", "template", "truncated", "none"]))
def test_ordinary_responses_split_as_before(lead: str, reasoning: str, rest: str,
                                            opened_by: str) -> None:
    # (a) at most one <think>, at the start, and one </think> after it: vLLM's split, unchanged
    text = {"model": lead + render_think(reasoning, rest),
            "template": reasoning + THINK_CLOSE + rest,
            "truncated": lead + THINK_OPEN + reasoning,
            "none": reasoning + rest}[opened_by]
    before = _first_close_split(text)
    assert split_think(text) == before
    answer = last_answer(before[1]) if before[1] is not None else None
    assert split_trace(text) == ((before[0] or "").strip(), (answer or "").strip())


# what thinking models write when they restate the prompt's instructions in their reasoning
QUOTED_PAIRS = ["<think></think>", "<think> ... </think>", "`<think>`…`</think>`",
                "Work in four phases inside <think></think>:"]
QUOTED_OPENS = ["<think>", "<think>\n", "the <think> tag", '"<think>"', "I am inside <think> now"]
QUOTED_CLOSES = ["</think>", "After </think>, write a short solution",
                 "end with <answer>X</answer> after </think>", "`</think>`"]


@st.composite
def quoting_reasoning(draw: st.DrawFn, lone_opens: bool = True) -> str:
    """A reasoning text with quoted think tags at random places: pairs and lone <think>s in
    any order, lone </think>s after them (a <think> after more </think>s than <think>s would
    open a second block: see test_a_tag_reopened_after_the_block_is_a_second_block)."""
    opens = QUOTED_PAIRS + QUOTED_OPENS if lone_opens else QUOTED_PAIRS
    quotes = draw(st.lists(st.sampled_from(opens), max_size=4))
    quotes += draw(st.lists(st.sampled_from(QUOTED_CLOSES), max_size=3))
    texts = draw(st.lists(plain, min_size=len(quotes) + 1, max_size=len(quotes) + 1))
    return "".join(t + q for t, q in zip(texts, [*quotes, ""], strict=True))


@given(blank, quoting_reasoning(), plain, st.booleans())
def test_quoted_tags_are_reasoning(lead: str, reasoning: str, answer: str,
                                   template_opened: bool) -> None:
    # (b) nothing before or after a quote is lost, (c) the answer is found after the close,
    # (e) whether the model or the chat template wrote the opening <think>
    if template_opened:
        # (a response that begins with <think> is one the model opened: the template's
        # reasoning starts with a word)
        reasoning = "Okay, " + reasoning
        text = reasoning + THINK_CLOSE + "\n" + render_answer(answer)
    else:
        text = lead + render_trace(reasoning, answer)
    assert split_think(text) == (reasoning, "\n" + render_answer(answer))
    assert split_trace(text) == (reasoning.strip(), answer.strip())
    assert strip_reasoning(text) == render_answer(answer)
    assert is_long_form(text) == (THINK_OPEN in text)


@given(quoting_reasoning(lone_opens=False), plain, quoting_reasoning(), plain, st.booleans())
def test_a_tag_reopened_after_the_block_is_a_second_block(first: str, between: str,
                                                          second: str, after: str,
                                                          template_opened: bool) -> None:
    # (d) two blocks with an answer between them: the first block ends before the answer,
    # which stays in the rest with the second block, whatever each block quotes (but a lone
    # <think>: after one, the next block reads as nested in the first, the rule's known limit)
    first = "Okay, " + first if template_opened else first
    text = ("" if template_opened else THINK_OPEN) + first + THINK_CLOSE + between + \
        render_think(second, after)
    assert split_think(text) == (first, between + render_think(second, after))


def _opens_outside(reasoning: str, depth: int = 1) -> bool:
    """Whether a <think> in ``reasoning`` comes after the block closed: more </think>s than
    <think>s (counted from the block's own <think>) before it."""
    tags = re.findall(r"</?think>", reasoning)
    return any(tag == THINK_OPEN and tags[:i].count(THINK_CLOSE) >= tags[:i].count(THINK_OPEN)
               + depth for i, tag in enumerate(tags))


@given(tagged | st.text(max_size=200))
def test_split_is_total_and_the_rest_is_a_suffix(text: str) -> None:
    reasoning, rest = split_think(text)
    if reasoning is None:
        assert rest == text and THINK_OPEN not in text and THINK_CLOSE not in text
    elif rest is not None:
        # the rest starts right after a </think>; before it, the reasoning, never reopened;
        # after it, the next think tag (if any) reopens: the block took every </think> it could
        assert text.endswith(reasoning + THINK_CLOSE + rest)
        assert not _opens_outside(reasoning)
        assert re.findall(r"</?think>", rest)[:1] in ([], [THINK_OPEN])
        # nothing is dropped but the opening <think> and whitespace before it
        head = text[:len(text) - len(reasoning + THINK_CLOSE + rest)]
        assert head == "" or (head.endswith(THINK_OPEN) and not head[:-len(THINK_OPEN)].strip())
    else:
        # never closed: no </think> after the opening (the response's start when it does not
        # begin with <think>)
        assert text.endswith(reasoning) and THINK_CLOSE not in reasoning
        head = text[:len(text) - len(reasoning)]
        assert head == "" or (head.endswith(THINK_OPEN) and not head[:-len(THINK_OPEN)].strip())
    expected = (last_answer(rest) or "") if rest is not None else ""
    assert split_trace(text)[1] == expected.strip()


@given(tagged)
def test_is_long_form_is_the_format_rewards_regex_on_ordinary_responses(text: str) -> None:
    # the GRPO format reward's former regex: is_long_form gives the same verdicts wherever the
    # response has one <think> (at its start) and one </think>
    stripped = text.lstrip()
    if text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1 \
            or not stripped.startswith(THINK_OPEN):
        return
    regex = re.compile(r"<think>.*?</think>.*?<answer>.*?</answer>", re.DOTALL)
    assert is_long_form(text) == bool(regex.search(text))


@pytest.mark.parametrize(("text", "reasoning", "answer"), [
    # (a) ordinary: unchanged
    ("<think>3 plus 4 is 7.</think>\n<answer>7</answer>", "3 plus 4 is 7.", "7"),
    # (b) a quoted pair in the reasoning: nothing before or after it is lost
    ("<think>I must reason in <think> ... </think> tags. 3+4=7.</think>\n<answer>7</answer>",
     "I must reason in <think> ... </think> tags. 3+4=7.", "7"),
    # (c) a quoted </think> alone, and the prompt's own instruction restated
    ("<think>After </think>, write a solution and end with <answer>X</answer>. 3+4=7."
     "</think>\n<answer>7</answer>",
     "After </think>, write a solution and end with <answer>X</answer>. 3+4=7.", "7"),
    # (e) the chat template opened the block, and the reasoning quotes <think> alone
    ("Okay, I reason inside the <think> block. 3+4=7.\n</think>\n\nSo <answer>7</answer>",
     "Okay, I reason inside the <think> block. 3+4=7.", "7"),
    ("Put reasoning in <think></think>, then after </think> the answer. 7\n</think>\n"
     "<answer>7</answer>", "Put reasoning in <think></think>, then after </think> the answer. 7",
     "7"),
    # (d) two separate blocks with an answer between them: the answer after the first is kept
    ("<think>a</think><answer>3</answer><think>b</think><answer>5</answer>", "a", "5"),
    ("a</think>\n<answer>3</answer>\n<think>b</think><answer>5</answer>", "a", "5"),
    # (d) no answer outside the think block
    ("<think>so <answer>7</answer></think>", "so <answer>7</answer>", ""),
    ("<think>a</think><answer>7</answer></think>", "a</think><answer>7</answer>", ""),
])
def test_thinking_model_cases(text: str, reasoning: str, answer: str) -> None:
    assert split_trace(text) == (reasoning, answer)
