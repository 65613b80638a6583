"""The fast "values differ" test must never contradict math-verify."""

from __future__ import annotations

import logging
import re

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
            st.tuples(st.integers(2, 9), inner).map(lambda t: f"{t[0]}({t[1]}+y)"),
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

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its timeouts-off warning
    if values_differ(gold, answer):
        assert not verify(parse(f"${gold}$", parsing_timeout=None),
                          parse(f"${answer}$", parsing_timeout=None), timeout_seconds=None)
        assert check(gold, f"\\boxed{{{answer}}}").verdict == "incorrect"


def test_unknown_notation_is_left_to_math_verify() -> None:
    # 2(3) is 5 to math-verify and x(2) a function: neither is read as a product here
    for text in ("x=1", "e^x", "\\sqrt[3]{8}", "x^23", "(1,2)", "f(x)+\\sin x", "50\\%", "2 3",
                 "2(3)", "x(2)", "(2)3", "\\pi(2)", "1((1))", "((2))(3)", "(2)((3))"):
        assert compile_expression(text) is None, text
        assert not values_differ(text, "0")


def _with_division() -> st.SearchStrategy[str]:
    """Implicit products next to ``/`` and ``\\cdot``: ``1/2x``, ``3/4(x+1)``, ``x/2y``."""
    leaves = st.one_of(st.integers(1, 9).map(str), st.sampled_from(["x", "y", "z", "\\pi"]))

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "/", " \\cdot ", "", " "]), inner)
            .map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
            st.tuples(inner, inner).map(lambda t: f"\\frac{{{t[0]}}}{{{t[1]}}}"),
            inner.map(lambda e: f"({e})"),
            st.tuples(inner, st.integers(2, 3)).map(lambda t: f"{t[0]}^{t[1]}"),
        )

    return st.recursive(leaves, grow, max_leaves=5)


def _math_verify_value(text: str, point: dict[str, float]) -> complex | None:
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its timeouts-off warning
    parsed = [p for p in parse(f"${text}$", parsing_timeout=None) if not isinstance(p, str)]
    if not parsed or not hasattr(parsed[0], "free_symbols"):
        return None
    expr = parsed[0]
    try:
        return complex(expr.subs({s: point.get(s.name, 7.0) for s in expr.free_symbols}).evalf())
    except (TypeError, ValueError, ArithmeticError):
        return None


@settings(max_examples=150, deadline=None)
@given(expr=_with_division())
def test_the_reader_reads_as_math_verify_does(expr: str) -> None:
    """Whatever the fast reader accepts, it evaluates to math-verify's reading of it (``1/2x``
    is 1/(2x), ``\\frac{1}{2}x`` is x/2) wherever both are defined."""
    from dualcurate_verify.numeric import _VALUES

    compiled = compile_expression(expr)
    if compiled is None:
        return
    value, names = compiled
    point = dict(zip(sorted(names), _VALUES[0], strict=False))
    try:
        ours = value(point)
    except (ArithmeticError, ValueError, OverflowError):
        return
    theirs = _math_verify_value(expr, point)
    if theirs is None or isinstance(ours, complex) or abs(ours) > 1e9:
        return
    assert abs(ours - theirs) <= 1e-6 * max(1.0, abs(ours)), (expr, ours, theirs)


def test_a_mixed_number_is_left_to_math_verify() -> None:
    """``1\\frac{1}{2}`` is 1 + 1/2 to math-verify (a mixed number), not 1 * 1/2: the fast
    reader does not read it (hypothesis found ``(1\\frac{1}{1})``)."""
    assert compile_expression("(1\\frac{1}{1})") is None
    assert compile_expression("2\\frac{1}{2}") is None
    assert compile_expression("(2)\\frac{1}{2}") is None
    assert compile_expression("\\frac{1}{1}\\frac{1}{1}") is None
    assert compile_expression("x\\frac{1}{2}") is not None


def test_implicit_products_bind_tighter_than_division() -> None:
    assert check("\\frac{1}{2x}", "\\boxed{1/2x}").verdict == "correct"
    assert check("\\frac{1}{2}x", "\\boxed{1/2x}").verdict == "incorrect"
    assert check("\\frac{3}{4(x+1)}", "\\boxed{3/4(x+1)}").verdict == "correct"
    assert values_differ("\\frac{x}{2}", "1/2x")


def test_math_verify_unit_words_are_left_to_it() -> None:
    """math-verify drops a trailing unit word (``6/5t`` is 6/5 to it): the reader must not
    decide such a text. Every unit word of its list is covered."""
    from latex2sympy2_extended.math_normalization import units

    from dualcurate_verify.numeric import MV_UNIT_TAIL

    for unit in units:
        for text in (f"2 {unit}", f"6/5{unit}"):
            if re.fullmatch(r"[a-z]+", unit) and len(unit) <= 6:
                assert MV_UNIT_TAIL.search(text) or compile_expression(text) is None, text
    assert compile_expression("6/5t") is None
    assert check("\\frac{6}{5}t", "\\boxed{6/5t}").verdict != "incorrect"
