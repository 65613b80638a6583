"""Rule-based cleaning: examples from real datasets, then properties with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate_hf.cleaning import (
    CleaningOptions,
    clean_item,
    normalise_answer,
    rewrite_short_answer_instructions,
    strip_noise,
    unanswerable_reason,
)


@pytest.mark.parametrize(("raw", "clean"), [
    ("12. What is 2+2? (5 points)", "What is 2+2?"),
    ("Question 3: Find x.【3分】", "Find x."),
    ("Q7) Which shape is larger?", "Which shape is larger?"),
    ("第3题：求x的值（5分）", "求x的值"),
    ("(2) Find the area [2 marks]", "Find the area"),
    ("See https://example.com/a?b=1 then solve: 3x = 9", "See then solve: 3x = 9"),
    ("Solve it (10 pts).", "Solve it."),
    ("What   is\tthis?", "What is this?"),
])
def test_strip_noise_examples(raw: str, clean: str) -> None:
    assert strip_noise(raw) == clean


@pytest.mark.parametrize("kept", [
    "1.5 times x is 3. Find x.",   # a decimal is not a question number
    "2019 was a good year. What happened?",
    "A\nB\nC",
])
def test_strip_noise_keeps_real_content(kept: str) -> None:
    assert strip_noise(kept) == kept


@pytest.mark.parametrize(("question", "answer", "reason"), [
    ("Watch the video and count the jumps.", "3", "needs_other_media"),
    ("As shown in the video, what falls?", "ball", "needs_other_media"),
    ("Listen to the audio. Who speaks?", "Tom", "needs_other_media"),
    ("   ", "3", "empty_question"),
    ("What is 1+1?", None, "missing_answer"),
    ("What is 1+1?", "N/A", "answer_not_available"),
    ("What is 1+1?", "  ", "answer_not_available"),
    ("What is 1+1?", "2", None),
    ("What does the image show?", "a videocassette", None),
])
def test_unanswerable(question: str, answer: str | None, reason: str | None) -> None:
    assert unanswerable_reason(question, answer) == reason


@pytest.mark.parametrize(("raw", "expect"), [
    ("What colour? Answer with a single word.", "final answer as a single word or phrase"),
    ("Who is it? Answer the question using a single word or phrase.", "single word or phrase"),
    ("Which one?\nAnswer with the option's letter from the given choices directly.",
     "letter of the correct option"),
    ("How many? Answer with a single number.", "final answer as a single number"),
    ("Is it red? Please answer yes or no.", "yes or no as the final answer"),
])
def test_rewrite_asks_for_reasoning(raw: str, expect: str) -> None:
    out = rewrite_short_answer_instructions(raw)
    assert "step by step" in out
    assert expect in out
    assert out.split("?")[0] == raw.split("?")[0]  # the question itself is untouched


@pytest.mark.parametrize(("raw", "clean"), [
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("The answer is \\boxed{x^{2}}", "x^{2}"),
    ("12 cm", "12"), ("45°", "45"), ("45^\\circ", "45"), ("3.5 kg", "3.5"),
    ("5\\text{ cm}", "5"), ("$5", "5"), ("1,000 dollars", "1,000"), ("3 cm^2", "3"),
    ("$x^2$", "x^2"), (" 42. ", "42"), ("  Paris  ", "Paris"),
    ("3x", "3x"), ("2 pi", "2 pi"), ("5 apples and 3 pears", "5 apples and 3 pears"),
])
def test_normalise_answer_examples(raw: str, clean: str) -> None:
    assert normalise_answer(raw) == clean


def test_units_kept_when_disabled() -> None:
    assert normalise_answer("12 cm", strip_units=False) == "12 cm"


def test_clean_item_records_changes_and_drops() -> None:
    opts = CleaningOptions()
    out = clean_item("3. Find x. (4 points) Answer with a single number.", "\\boxed{7 cm}", opts)
    assert out.dropped is None
    assert out.answer == "7"
    assert out.question.startswith("Find x.")
    assert set(out.changes) == {"noise", "answer", "instruction"}
    assert clean_item("See the video.", "1", opts).dropped == "needs_other_media"
    keep_all = CleaningOptions(drop_unanswerable=False)
    assert clean_item("See the video.", "1", keep_all).dropped is None
    assert clean_item("q", None, CleaningOptions(enabled=False)).dropped == "missing_answer"
    untouched = clean_item(" 1. q (5 points) ", "\\boxed{2}", CleaningOptions(enabled=False))
    assert (untouched.question, untouched.answer) == (" 1. q (5 points) ", "\\boxed{2}")


# -- properties ------------------------------------------------------------------------------
words = st.text(alphabet=st.characters(categories=("L", "N", "P", "Zs"),
                                       exclude_characters="\\{}$"), min_size=1, max_size=60)


@given(words)
def test_strip_noise_is_idempotent(text: str) -> None:
    once = strip_noise(text)
    assert strip_noise(once) == once


@given(st.integers(1, 99), st.sampled_from(["points", "pts", "marks", "分"]),
       st.sampled_from(["({} {})", "（{}{}）", "【{}{}】", "[{} {}]"]))
def test_point_values_always_removed(n: int, unit: str, template: str) -> None:
    question = f"Find the value of y. {template.format(n, unit)}"
    assert strip_noise(question) == "Find the value of y."


@given(st.integers(1, 300), st.sampled_from(["{}. ", "Question {}: ", "Q{}) ", "({}) "]))
def test_question_numbers_always_removed(n: int, template: str) -> None:
    assert strip_noise(template.format(n) + "Which is larger?") == "Which is larger?"


@given(st.text(alphabet="abcdefghij/._-?=&", min_size=1, max_size=30))
def test_urls_always_removed(path: str) -> None:
    assert "http" not in strip_noise(f"Go to https://site.org/{path} and solve it.")


@given(st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False),
       st.sampled_from(["cm", "kg", "m/s", "°", "degrees", "dollars", "units", "秒"]))
@settings(max_examples=60)
def test_number_with_unit_becomes_the_number(value, unit: str) -> None:
    number = str(value)
    assert normalise_answer(f"{number} {unit}") == number
    assert normalise_answer(f"\\boxed{{{number}}}") == number


@given(words)
def test_normalise_answer_is_idempotent(text: str) -> None:
    once = normalise_answer(text)
    assert normalise_answer(once) == once


@given(words, words)
def test_clean_item_never_loses_the_answer(question: str, answer: str) -> None:
    out = clean_item(question, answer, CleaningOptions())
    if out.dropped is None:
        assert out.question.strip()
        assert out.answer.strip()
        assert out.answer.strip().lower() not in ("n/a", "null")
