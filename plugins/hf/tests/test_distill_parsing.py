"""split_trace: reasoning inside <think>, the answer inside <answer> after the think block.
(The parser lives in core's dualcurate.formats; its tests sit with the distillers.)"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dualcurate.chat import Completion
from dualcurate.formats import make_trace, split_trace, strip_reasoning
from dualcurate.schema import Trace

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
plain = st.text(max_size=60).filter(lambda s: not any(t in s for t in TAGS)
                                    and not any(s.endswith(t[:i]) for t in TAGS
                                                for i in range(1, len(t))))


@given(st.text(" \n\t", max_size=3), plain, plain, plain, plain)
def test_well_formed_responses_round_trip(before, reasoning, middle, answer, after):
    text = f"{before}<think>{reasoning}</think>{middle}<answer>{answer}</answer>{after}"
    assert split_trace(text) == (reasoning.strip(), answer.strip())


@given(plain.filter(str.strip), plain, plain)
def test_text_before_a_later_think_is_reasoning(before, reasoning, answer):
    # a response that does not begin with <think> was opened by the chat template: a <think>
    # inside it is quoted, and nothing the model wrote before it is dropped (the trace format)
    text = f"{before}<think>{reasoning}</think><answer>{answer}</answer>"
    assert split_trace(text) == (f"{before}<think>{reasoning}".strip(), answer.strip())


@given(plain, plain, plain)
def test_last_answer_after_the_think_block_wins(reasoning, first, last):
    text = f"<think>{reasoning}<answer>inside</answer></think><answer>{first}</answer> or " \
           f"<answer>{last}</answer>"
    assert split_trace(text) == (f"{reasoning}<answer>inside</answer>".strip(), last.strip())


@given(plain, plain)
def test_opened_by_the_chat_template(reasoning, answer):
    # Qwen3-style templates put <think> in the prompt: the response starts inside it.
    assert split_trace(f"{reasoning}</think>\n<answer>{answer}</answer>") == \
           (reasoning.strip(), answer.strip())


@given(plain)
def test_truncated_inside_the_think_block(reasoning):
    assert split_trace(f"<think>{reasoning}") == (reasoning.strip(), "")


@given(plain, plain)
def test_no_think_block(text, answer):
    assert split_trace(f"{text}<answer>{answer}</answer>") == ("", answer.strip())
    assert split_trace(text) == ("", "")


def test_unclosed_answer_is_no_answer():
    assert split_trace("<think>a</think> so <answer>4") == ("a", "")


@given(st.text(max_size=200))
def test_never_raises(text):
    reasoning, answer = split_trace(text)
    assert isinstance(reasoning, str) and isinstance(answer, str)
    assert len(reasoning) + len(answer) <= len(text)


def test_strip_reasoning():
    assert strip_reasoning("<think>hmm</think>\nA chart.") == "A chart."
    assert strip_reasoning("  A chart. ") == "A chart."


def test_traces_have_the_schema_keys():
    ok = make_trace(Completion(text="<think>r</think><answer>a</answer>", finish_reason="length",
                               prompt_tokens=3, completion_tokens=9), 2, "m", "hf")
    failed = make_trace(Completion(error="boom"), 1, "m", "hf")
    for trace in (ok, failed):
        Trace(**trace)  # no unknown keys
    assert (ok["reasoning"], ok["answer"], ok["truncated"], ok["sample_index"]) == ("r", "a", True, 2)
    assert failed["error"] == "boom" and failed["text"] == "" and failed["truncated"] is False
