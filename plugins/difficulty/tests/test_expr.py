"""The safe keep-rule parser: a reference interpretation (hypothesis), presets, and an injection
suite that must be rejected with an error naming the expression."""

from __future__ import annotations

import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate_difficulty.expr import KeepExpressionError, parse_keep

NAMES = ("pass_rate", "pass_drawn", "domain", "n_verified")
ROW = {"pass_rate": 0.25, "pass_drawn": 4, "domain": "math", "n_verified": 3,
       "consistent": True, "split": None}

OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge}


def numbers() -> st.SearchStrategy[tuple[str, float]]:
    values = st.one_of(st.integers(-5, 5).map(float),
                       st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 3.0, 4.0]))
    return values.map(lambda v: (repr(v), v))


def numeric_operand() -> st.SearchStrategy[tuple[str, object]]:
    names = st.sampled_from(["pass_rate", "pass_drawn", "n_verified"]).map(
        lambda n: (n, ROW[n]))
    return st.one_of(names, numbers())


@st.composite
def comparison(draw: st.DrawFn) -> tuple[str, bool]:
    if draw(st.booleans()):
        left, right = draw(numeric_operand()), draw(numeric_operand())
        op = draw(st.sampled_from(sorted(OPS)))
        return f"{left[0]} {op} {right[0]}", OPS[op](left[1], right[1])
    values = draw(st.lists(st.sampled_from(["math", "chart", "spatial"]), min_size=1,
                           max_size=3))
    negate = draw(st.booleans())
    text = f"domain {'not in' if negate else 'in'} ({', '.join(repr(v) for v in values)},)"
    return text, (ROW["domain"] not in values) if negate else (ROW["domain"] in values)


def expressions() -> st.SearchStrategy[tuple[str, bool]]:
    def extend(children: st.SearchStrategy[tuple[str, bool]]) -> st.SearchStrategy:
        pair = st.tuples(children, children)
        return st.one_of(
            pair.map(lambda p: (f"({p[0][0]}) and ({p[1][0]})", p[0][1] and p[1][1])),
            pair.map(lambda p: (f"({p[0][0]}) or ({p[1][0]})", p[0][1] or p[1][1])),
            children.map(lambda c: (f"not ({c[0]})", not c[1])),
        )

    return st.recursive(comparison(), extend, max_leaves=8)


@given(expressions())
@settings(max_examples=200, deadline=None)
def test_matches_reference_semantics(case: tuple[str, bool]) -> None:
    text, expected = case
    assert parse_keep(text).evaluate(ROW) is expected


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_chained_band(lo: float, hi: float, rate: float) -> None:
    rule = parse_keep(f"{lo!r} <= pass_rate <= {hi!r}")
    assert rule.evaluate({"pass_rate": rate}) is (lo <= rate <= hi)
    assert rule.names == {"pass_rate"}


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        rule = parse_keep(text)
    except KeepExpressionError:
        return
    try:
        rule.evaluate({name: 1 for name in rule.names})
    except KeepExpressionError:
        pass


def test_presets() -> None:
    assert parse_keep("hard").evaluate({"pass_rate": 0.0}) is True
    assert parse_keep("hard").evaluate({"pass_rate": 0.25}) is False
    assert parse_keep("nontrivial").evaluate({"pass_rate": 0.75}) is True
    assert parse_keep("nontrivial").evaluate({"pass_rate": 1.0}) is False


def test_bare_names_constants_and_null_ordering() -> None:
    assert parse_keep("consistent and pass_rate < 1").evaluate(ROW) is True
    assert parse_keep("split == None").evaluate(ROW) is True
    assert parse_keep("split < 3").evaluate(ROW) is False  # ordering with null: false
    assert parse_keep("pass_rate > -1").evaluate(ROW) is True
    assert parse_keep("(not consistent) == False").evaluate(ROW) is True


def test_missing_column_names_it() -> None:
    with pytest.raises(KeepExpressionError, match="n_traces"):
        parse_keep("n_traces > 2").evaluate({"pass_rate": 0.0})


def test_type_mismatch_is_a_clear_error() -> None:
    with pytest.raises(KeepExpressionError, match="domain < 1"):
        parse_keep("domain < 1").evaluate(ROW)


INJECTIONS = [
    "__import__('os')",
    "__import__('os').system('echo hacked')",
    "pass_rate.__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "open('/etc/passwd')",
    "eval('1')",
    "exec('x=1')",
    "(lambda: 1)()",
    "lambda x: x",
    "pass_rate.real > 0",
    "rollouts[0]",
    "[x for x in rollouts]",
    "{1: 2}",
    "pass_rate + 1 > 0",
    "pass_rate * 2 == 0",
    "f'{pass_rate}' == '0'",
    "pass_rate if True else 0",
    "(x := 1)",
    "__builtins__ == 1",
    "pass_rate == 0; import os",
    "import os",
    "pass_rate in rollouts",
    "b'x' == 1",
    "1j == 0",
    "... == 1",
    "-domain == 1",
    "pass_rate is None",
    "",
    "(" * 300 + "1" + ")" * 300,
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_rejected(text: str) -> None:
    with pytest.raises(KeepExpressionError) as info:
        parse_keep(text)
    assert "keep expression" in str(info.value)
    if text and len(text) < 100:
        assert repr(text)[1:-1][:20] in str(info.value)


def test_error_names_the_offending_part() -> None:
    with pytest.raises(KeepExpressionError, match="Call"):
        parse_keep("pass_rate == len(rollouts)")
    with pytest.raises(KeepExpressionError, match="Attribute"):
        parse_keep("pass_rate.real == 0")
