"""The data contract: completions per mode, answer diversity, prompt–completion passthrough,
images resolved for vision models and dropped for text models."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualcurate import Sample
from dualcurate_trl.data import (
    build_examples,
    has_prompt_completion,
    long_completion,
    short_completion,
    to_dataset,
)
from dualcurate_trl.toy import colour_rows, trace

LONG_RE = re.compile(r"<think>(.*)</think>\n<answer>(.*)</answer>", re.DOTALL)
safe_text = st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=40)


def test_completion_formats_are_the_contract() -> None:
    assert long_completion("a", "b") == "<think>a</think>\n<answer>b</answer>"
    assert short_completion("b") == "<answer>b</answer>"


@given(safe_text, safe_text)
def test_long_completion_round_trips(reasoning: str, answer: str) -> None:
    match = LONG_RE.fullmatch(long_completion(reasoning, answer))
    assert match is not None
    assert match.groups() == (reasoning, answer)


def _row(traces: list[dict], **extra) -> dict:
    row = Sample(source="t", question="Q?", answer="4").to_row()
    row["traces"] = traces
    row.update(extra)
    return row


def _assistant_texts(examples: list[dict]) -> list[str]:
    return [ex["completion"][0]["content"] for ex in examples]


def test_long_mode_one_example_per_correct_untruncated_trace() -> None:
    rows = [_row([trace("r1", "4"), trace("r2", "four"), trace("bad", "5", "incorrect"),
                  trace("cut", "4", truncated=True), trace("inv", "4", "invalid")]),
            _row([trace("no", "3", "incorrect")])]
    examples, stats = build_examples(rows, mode="long")
    assert _assistant_texts(examples) == [long_completion("r1", "4"),
                                          long_completion("r2", "four")]
    assert stats.rows == 2 and stats.examples == 2
    assert stats.skipped == {"no correct untruncated trace": 1}
    assert examples[0]["prompt"] == [{"role": "user", "content": "Q?"}]


def test_short_mode_uses_the_gold_answer_and_a_system_prompt() -> None:
    examples, _ = build_examples([_row([])], mode="short", system_prompt="Be brief.")
    assert _assistant_texts(examples) == [short_completion("4")]
    assert examples[0]["prompt"][0] == {"role": "system", "content": "Be brief."}


def test_row_mode_follows_each_rows_mode_column() -> None:
    rows = [_row([trace("r", "4")], mode="long"), _row([trace("r", "4")], mode="short")]
    examples, _ = build_examples(rows, mode="row")
    assert _assistant_texts(examples) == [long_completion("r", "4"), short_completion("4")]
    with pytest.raises(ValueError, match="mode='row' needs a 'mode' column"):
        build_examples([_row([])], mode="row")


def test_prompt_completion_rows_are_taken_as_given(stage_context) -> None:
    digest = stage_context.images.put(b"\x89PNG fake")
    row = {"prompt": [{"role": "user", "content": [
               {"type": "image", "image": digest, "text": None},
               {"type": "text", "text": "Answer directly: colour?", "image": None}]}],
           "completion": [{"role": "assistant", "content": "<answer>red</answer>"}],
           "question": "ignored", "answer": "ignored"}
    assert has_prompt_completion(row)
    loaded: list[str] = []
    examples, _ = build_examples([row], vision=True, load_image=lambda h: loaded.append(h) or h)
    assert loaded == [digest]
    assert examples[0]["prompt"][0]["content"] == [
        {"type": "image"}, {"type": "text", "text": "Answer directly: colour?"}]
    assert examples[0]["images"] == [digest]
    text_examples, _ = build_examples([row], vision=False)
    assert text_examples[0]["prompt"] == [{"role": "user",
                                           "content": "Answer directly: colour?"}]
    assert text_examples[0]["completion"] == [{"role": "assistant",
                                               "content": "<answer>red</answer>"}]


def test_vision_examples_carry_pil_images(stage_context) -> None:
    rows = colour_rows(stage_context)
    examples, _ = build_examples(rows, mode="short", vision=True,
                                 load_image=stage_context.images.open)
    ds = to_dataset(examples, vision=True)
    first = ds[0]
    assert first["prompt"][0]["content"][0]["type"] == "image"
    assert len(first["images"]) == 1 and first["images"][0].size == (32, 32)


def test_no_examples_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="mode='short'"):
        to_dataset([], vision=False)


def test_missing_question_names_the_row() -> None:
    with pytest.raises(ValueError, match=r"row 0 .*'question'"):
        build_examples([{"answer": "1"}], mode="short")


def test_text_models_count_the_images_they_drop(stage_context) -> None:
    rows = colour_rows(stage_context)
    examples, stats = build_examples(rows, mode="short", vision=False)
    assert stats.images_dropped == len(rows)
    assert examples[0]["prompt"] == [{"role": "user", "content": "What is the colour?"}]
    assert "images" not in examples[0]


def test_build_stats_read_as_a_sentence_in_the_log() -> None:
    """The run log says what was skipped in words (no dict repr), rows and examples apart."""
    rows = [_row([trace("r1", "4")]), _row([trace("no", "3", "incorrect")]),
            _row([trace("no", "3", "incorrect")])]
    _, stats = build_examples(rows, mode="long")
    assert stats.describe() == ("3 rows → 1 example; skipped 2 rows with no correct "
                                "untruncated trace")
    stats.skipped["longer than max_length"] = 1
    text = stats.describe()
    assert text.endswith("skipped 2 rows with no correct untruncated trace and 1 example "
                         "longer than max_length")
    assert "{" not in text and "'" not in text
    _, clean = build_examples([_row([trace("r1", "4")])], mode="long")
    assert clean.describe() == "1 row → 1 example, none skipped"
