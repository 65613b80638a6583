"""Final-answer extraction and normalisation: examples and properties."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate_verify import check, extract_answer
from dualcurate_verify.extract import extract_rules, split_think
from dualcurate_verify.normalise import (
    choice_letter,
    choice_letters,
    looks_textual,
    normalise_text,
    numbers_equal,
    parse_number,
    strip_math,
)

# answers made of characters that carry no markup of their own
plain_answer = st.text(alphabet=st.sampled_from("abcdefxyz0123456789+-*/^()= "), min_size=1,
                       max_size=30).filter(lambda s: s.strip() != "")
filler = st.text(alphabet=st.sampled_from("abcdefghij klmnop,;\n"), max_size=200)


@pytest.mark.parametrize(("response", "expected"), [
    ("42", "42"),
    ("<think>it is 41</think><answer>42</answer>", "42"),
    ("<think>x</think>So \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("<think>x</think>Final Answer: The final answer is $7$. I hope it is correct.", "7"),
    ("The answer is: 3.5", "3.5"),
    ("(B) 45°", "(B) 45°"),
    ("<answer>\\boxed{12}</answer>", "12"),
    ("</think>the answer is 9", "9"),  # template opened the think block
    ("<think>\\boxed{5}</think>", None),  # reasoning never counts
    ("<think>never closed \\boxed{5}", None),
])
def test_extraction_examples(response: str, expected: str | None) -> None:
    assert extract_answer(response) == expected


def test_math_verify_extracts_from_long_prose() -> None:
    text = ("We expand everything carefully and collect the terms of the polynomial, "
            "which after simplification leaves us with the value $x = 17$")
    assert extract_rules(text).answer is None  # no rule applies: math-verify's turn
    assert extract_answer(text) in ("x = 17", "17", "x=17")


def test_trailing_phrase_beats_intermediate_boxes() -> None:
    text = ("First \\boxed{200} then \\boxed{255} so the total is $10,455. Final Answer: The "
            "final answer is $10,455$. I hope it is correct.")
    assert extract_rules(text).answer == "10,455"


@given(reasoning=filler, answer=plain_answer)
def test_answer_tag_after_think_is_the_answer(reasoning: str, answer: str) -> None:
    response = f"<think>{reasoning}</think>\n<answer>{answer}</answer>"
    assert extract_rules(response).answer == strip_math(answer)


@given(reasoning=filler, hidden=plain_answer)
def test_reasoning_never_counts(reasoning: str, hidden: str) -> None:
    response = f"<think>{reasoning} \\boxed{{{hidden}}} <answer>{hidden}</answer></think>"
    assert extract_answer(response) is None
    assert check(hidden, response).verdict != "correct"


@given(text=st.text(max_size=300) | st.lists(st.sampled_from(
    ["<think>", "</think>", "<answer>", "</answer>", "41", "42", " "]), max_size=12).map("".join))
def test_split_think_answer_part_follows_the_think_block(text: str) -> None:
    # the one split rule (dualcurate.formats): the answer part is what follows the think block,
    # so no reasoning is ever in it; a block reopened in it is one more block
    split = split_think(text)
    assert text.endswith(split.answer_part)
    assert (split.blocks == 0) == ("<think>" not in text and "</think>" not in text)
    if split.blocks == 0:
        assert split.answer_part == text and split.reasoning is None
    elif split.answer_part:
        assert text.endswith(f"{split.reasoning}</think>{split.answer_part}")
        assert split.blocks == 1 + split.answer_part.count("<think>")
    if split.unterminated:
        assert split.answer_part == ""


@pytest.mark.parametrize("response", [
    "<think>r</think><answer>41</answer><think>s</think><answer>42</answer>",
    "<think>r</think>\\boxed{41}<think>s</think>\\boxed{42}",
    "r</think>\\boxed{41}\n<think>s</think>\\boxed{42}",
])
def test_a_second_think_block_hides_nothing(response: str) -> None:
    # text written after the think block is all answer: a second block opened after it cannot
    # turn an earlier candidate into "reasoning" and leave only the gold to be seen
    split = split_think(response)
    assert "41" in split.answer_part and split.blocks == 2
    assert check("42", response).verdict != "correct"


@pytest.mark.parametrize("response", [
    "<think>r</think><answer>41</answer></think><answer>42</answer>",
    "<think>r</think>\\boxed{41}</think>\\boxed{42}",
])
def test_a_later_think_close_ends_the_block(response: str) -> None:
    # with no <think> between two </think>s, the text between them is reasoning (a quoted tag,
    # by the trace format's rule): only the answer after the last close is scored, like any
    # candidate written in the reasoning
    assert "41" not in split_think(response).answer_part
    assert check("42", response).verdict == "correct"
    assert check("41", response).verdict != "correct"


@given(n=st.integers(min_value=-10**12, max_value=10**12))
def test_integers_with_thousands_separators(n: int) -> None:
    assert check(str(n), f"{n:,}").verdict == "correct"
    assert check(str(n), f"{n:,}".replace(",", " ")).verdict == "correct"
    assert check(str(n), str(n + 1)).verdict == "incorrect"


@given(whole=st.integers(0, 10**6), frac=st.integers(1, 99))
def test_decimal_comma_and_point_agree(whole: int, frac: int) -> None:
    dot, comma = f"{whole}.{frac:02d}", f"{whole},{frac:02d}"
    assert parse_number(comma).value == parse_number(dot).value == Fraction(dot)
    assert check(dot, comma).verdict == "correct"


@given(p=st.integers(-500, 500), q=st.integers(1, 64))
def test_fraction_forms_agree(p: int, q: int) -> None:
    value = Fraction(p, q)
    sign = "-" if p < 0 else ""
    for form in (f"{p}/{q}", f"{sign}\\frac{{{abs(p)}}}{{{q}}}", f"${sign}\\dfrac{{{abs(p)}}}{{{q}}}$"):
        parsed = parse_number(form)
        assert parsed is not None and parsed.value == value, form
    assert check(f"{p}/{q}", f"\\boxed{{{sign}\\frac{{{abs(p)}}}{{{q}}}}}").verdict == "correct"


@given(n=st.integers(0, 10**6), unit=st.sampled_from(["cm", "kg", "°", "^\\circ", " \\text{m}", " apples"]))
def test_units_are_ignored_on_one_side(n: int, unit: str) -> None:
    number = parse_number(f"{n}{unit}")
    assert number is not None and number.value == n
    assert check(str(n), f"{n}{unit}").verdict == "correct"


@given(n=st.integers(1, 1000))
def test_percent(n: int) -> None:
    assert numbers_equal(parse_number(f"{n}%"), parse_number(str(n)))
    assert check(str(n), f"{n}\\%").verdict == "correct"
    assert check(str(Fraction(n, 100)), f"{n}%").verdict == "correct"


def test_units_that_differ_are_not_converted() -> None:
    assert check("5 m", "5 cm").verdict == "undecided"


@given(letter=st.sampled_from("ABCDEFGHIJ"), text=st.text(alphabet="0123456789° xyz", max_size=10))
def test_choice_letter_with_text(letter: str, text: str) -> None:
    got = choice_letter(f"({letter}) {text}")
    assert got is not None and got[0] == letter
    assert check(letter, f"({letter}) {text}").verdict == "correct"


def test_article_is_not_an_option() -> None:
    assert choice_letter("A triangle") is None
    assert choice_letters("A, C") == {"A", "C"}


@given(text=st.text(max_size=60))
def test_normalise_text_is_idempotent(text: str) -> None:
    once = normalise_text(text)
    assert normalise_text(once) == once


def test_a_spacing_command_left_by_another_is_removed_too() -> None:
    # "\~" loses its "~" and leaves "\ ", a spacing command of its own (found by hypothesis)
    for text in ("\\~0", "\\~\\~0", "\\\\~0"):
        once = normalise_text(text)
        assert normalise_text(once) == once, text


def test_brackets_matter_in_text_comparison() -> None:
    assert normalise_text("(0,9)") != normalise_text("[0,9)")
    assert check("$(0,9)$", "$[0,9)$").verdict != "correct"


def test_words_are_textual_math_is_not() -> None:
    assert looks_textual("Evelyn")
    assert not looks_textual("2 \\sin b \\cos a")
    assert not looks_textual("\\frac{NO}{BO}")
    assert check("Evelyn", "Evelny").verdict != "correct"  # sympy would call them equal


@given(cents=st.integers(-10**6, 10**6), other=st.integers(-10**6, 10**6))
def test_decimals_of_equal_precision_compare_exactly(cents: int, other: int) -> None:
    gold, answer = f"{cents / 100:.2f}", f"{other / 100:.2f}"
    assert check(gold, answer).verdict == ("correct" if cents == other else "incorrect")


def test_coarser_rounding_is_left_undecided() -> None:
    assert (check("1/3", "0.33").verdict, check("1/3", "0.33").label) == ("undecided", "rounding")
    assert check("3.14159", "3.14").verdict == "undecided"
    assert check("1/3", "0.333333").verdict == "correct"  # 6 places, as math-verify


@settings(max_examples=150, deadline=None)
@given(gold=st.text(max_size=40), response=st.text(max_size=120))
def test_check_never_raises_and_gives_a_known_verdict(gold: str, response: str) -> None:
    result = check(gold, response)
    assert result.verdict in ("correct", "incorrect", "invalid", "undecided")
    assert result.method == "rule" and result.reason
    if result.verdict == "correct":
        assert result.answer  # a correct verdict always names the answer it accepted
