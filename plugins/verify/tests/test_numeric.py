"""The fast "values differ" test must never contradict math-verify."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate_verify import check
from dualcurate_verify.numeric import compile_expression, values_differ


def _expressions() -> st.SearchStrategy[str]:
    leaves = st.one_of(st.integers(1, 12).map(str), st.sampled_from(["x", "y", "\\pi"]))

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "\\cdot "]), inner).map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
            st.tuples(inner, inner).map(lambda t: f"\\frac{{{t[0]}}}{{{t[1]}}}"),
            inner.map(lambda e: f"\\sqrt{{{e}}}"),
            inner.map(lambda e: f"({e})^{{2}}"),
            st.tuples(st.integers(2, 9), inner).map(lambda t: f"{t[0]}({t[1]})"),
        )

    return st.recursive(leaves, grow, max_leaves=6)


@given(expr=_expressions())
def test_an_expression_never_differs_from_itself(expr: str) -> None:
    assert compile_expression(expr) is not None, expr
    assert not values_differ(expr, expr)
    assert not values_differ(expr, f"({expr})+0")


@given(expr=_expressions(), shift=st.integers(1, 5))
def test_a_shifted_expression_differs(expr: str, shift: int) -> None:
    if _defined_somewhere(expr):
        assert values_differ(expr, f"{expr}+{shift}")


def _defined_somewhere(expr: str) -> bool:
    """Whether the expression has a finite real value at one of the test points."""
    from dualcurate_verify.numeric import _VALUES

    compiled = compile_expression(expr)
    assert compiled is not None
    value, names = compiled
    for values in _VALUES:
        try:
            v = value(dict(zip(sorted(names), values, strict=False)))
        except (ArithmeticError, ValueError):
            continue
        if isinstance(v, float) and abs(v) < 1e5:
            return True
    return False


@settings(max_examples=40, deadline=None)
@given(gold=_expressions(), answer=_expressions())
def test_differ_implies_math_verify_says_not_equal(gold: str, answer: str) -> None:
    from math_verify import parse, verify

    logging.disable(logging.WARNING)
    if values_differ(gold, answer):
        assert not verify(parse(f"${gold}$", parsing_timeout=None),
                          parse(f"${answer}$", parsing_timeout=None), timeout_seconds=None)
        assert check(gold, f"\\boxed{{{answer}}}").verdict == "incorrect"


def test_unknown_notation_is_left_to_math_verify() -> None:
    for text in ("x=1", "e^x", "\\sqrt[3]{8}", "x^23", "(1,2)", "f(x)+\\sin x", "50\\%", "2 3"):
        assert compile_expression(text) is None, text
        assert not values_differ(text, "0")
