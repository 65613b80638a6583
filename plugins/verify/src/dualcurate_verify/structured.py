"""Answers with structure the number rules cannot see: intervals, inequalities and matrices.

* **Intervals and inequalities** are read into one form, a union of intervals of one variable:
  ``[-2,7]``, ``x \\in [-2,7]``, ``-2 \\le x \\le 7``, ``x > 3``, ``(3,\\infty)``,
  ``(-\\infty,2) \\cup (3,\\infty)``, ``x < 2 \\text{ or } x > 3``. An inequality and the interval
  it describes are the same answer, written either way round (math-verify accepts an interval
  for an inequality gold but not the reverse; we accept both). A bare ``(a, b)`` may be a point,
  so it is only compared with another bracket pair, never with an inequality.
* **Matrices** (``pmatrix``/``bmatrix``/…) compare cell by cell when every cell is a number.

Endpoints and cells compare with the number rules: equal values decide, an answer that equals
the gold only after coarser rounding (``0.33`` for 1/3) is ``rounding`` (undecided, as for plain
numbers), anything else differs. Endpoints that are not plain numbers (``\\sqrt{2}``) are
compared by math-verify one by one (the caller passes ``symbolic``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from dualcurate_verify.normalise import numbers_equal, parse_number, rounds_to, strip_math

#: outcome of comparing two parts: True equal, False different, "rounding", or None (unknown)
Outcome = bool | str | None
Symbolic = Callable[[str, str], bool | None]

_INF = re.compile(r"^([+-]?)\s*(?:\\infty|∞|\\inf|oo|infinity)$", re.IGNORECASE)
_REL = {"<": "<", ">": ">", "≤": "<=", "≥": ">=", "\\le": "<=", "\\leq": "<=",
        "\\leqslant": "<=", "\\ge": ">=", "\\geq": ">=", "\\geqslant": ">=", "\\lt": "<",
        "\\gt": ">", "<=": "<=", ">=": ">="}
_REL_RE = re.compile(r"<=|>=|\\leqslant|\\geqslant|\\leq|\\geq|\\le|\\ge|\\lt|\\gt|[<>≤≥]")
_IN = re.compile(r"^\s*([A-Za-z])\s*(?:\\in|∈)\s*")
_UNION = re.compile(r"\\cup|∪|\\text\{\s*or\s*\}|\bor\b|\\lor|\\vee")
_BRACKETED = re.compile(r"^([\[(])(.*)([\])])$", re.DOTALL)


@dataclass(frozen=True)
class Span:
    """One interval: endpoints as text ('-inf' / 'inf' for infinities) and closedness."""

    low: str
    high: str
    low_closed: bool
    high_closed: bool


def _clean(text: str) -> str:
    s = strip_math(text)
    s = s.replace("\\\\", "\\")  # "-2 \\le x" written with a doubled backslash
    s = re.sub(r"\\left\s*|\\right\s*|\\!|\\,|\\;|\\ ", "", s)
    s = s.replace("\\{", "{").replace("\\}", "}") if s.startswith("\\{") else s
    return s.strip()


def _infinity(text: str) -> str | None:
    m = _INF.match(text.strip())
    if m is None:
        return None
    return "-inf" if m.group(1) == "-" else "inf"


def _split_pair(inner: str) -> tuple[str, str] | None:
    depth, cut = 0, None
    for i, ch in enumerate(inner):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            if cut is not None:
                return None
            cut = i
    if cut is None:
        return None
    low, high = inner[:cut].strip(), inner[cut + 1:].strip()
    return (low, high) if low and high else None


def _bracket_span(text: str) -> Span | None:
    m = _BRACKETED.match(text.strip())
    if m is None:
        return None
    pair = _split_pair(m.group(2))
    if pair is None:
        return None
    low, high = (_infinity(p) or p for p in pair)
    return Span(low, high, m.group(1) == "[", m.group(3) == "]")


def _inequality(text: str) -> tuple[str, Span] | None:
    """``a < x <= b``, ``x > a``, ``a >= x``: the variable and its interval."""
    pieces = _REL_RE.split(text)
    rels = [_REL[r] for r in _REL_RE.findall(text)]
    pieces = [p.strip() for p in pieces]
    if not rels or len(rels) > 2 or any(not p for p in pieces):
        return None
    if len(rels) == 2:
        low, var, high = pieces
        if not re.fullmatch(r"[A-Za-z]", var):
            return None
        if rels[0][0] == rels[1][0] == "<":
            return var, Span(low, high, rels[0] == "<=", rels[1] == "<=")
        if rels[0][0] == rels[1][0] == ">":
            return var, Span(high, low, rels[1] == ">=", rels[0] == ">=")
        return None
    left, right = pieces
    rel = rels[0]
    if re.fullmatch(r"[A-Za-z]", left) and not re.fullmatch(r"[A-Za-z]", right):
        var, bound = left, right
    elif re.fullmatch(r"[A-Za-z]", right) and not re.fullmatch(r"[A-Za-z]", left):
        var, bound = right, left
        rel = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}[rel]
    else:
        return None
    if rel.startswith("<"):
        return var, Span("-inf", bound, False, rel == "<=")
    return var, Span(bound, "inf", rel == ">=", False)


@dataclass(frozen=True)
class IntervalSet:
    """A union of intervals; ``written`` says how: 'interval' (with a square bracket, an
    infinity, a union or ``x \\in``), 'pair' (a bare ``(a, b)``) or 'inequality'."""

    spans: tuple[Span, ...]
    written: str
    variable: str | None = None


def read_intervals(text: str) -> IntervalSet | None:
    """Read an interval, a union of intervals or inequalities of one variable; None if the
    text is not one."""
    s = _clean(text)
    if not s or len(s) > 300:
        return None
    variable = None
    m = _IN.match(s)
    if m:
        variable, s = m.group(1), s[m.end():]
    if variable is None and _REL_RE.search(s):
        parts = [p.strip() for p in _UNION.split(s)]
        spans, names = [], set()
        for part in parts:
            got = _inequality(part)
            if got is None:
                return None
            names.add(got[0])
            spans.append(got[1])
        if len(names) != 1:
            return None
        return IntervalSet(tuple(spans), "inequality", names.pop())
    parts = [p.strip() for p in re.split(r"\\cup|∪", s)]
    spans = []
    for part in parts:
        span = _bracket_span(part)
        if span is None:
            return None
        spans.append(span)
    pair = (variable is None and len(spans) == 1 and not spans[0].low_closed
            and not spans[0].high_closed and "inf" not in (spans[0].low.lstrip("-"),
                                                           spans[0].high.lstrip("-")))
    return IntervalSet(tuple(spans), "pair" if pair else "interval", variable)


def _value_outcome(gold: str, answer: str, symbolic: Symbolic | None) -> Outcome:
    if gold in ("inf", "-inf") or answer in ("inf", "-inf"):
        return gold == answer
    g, a = parse_number(gold), parse_number(answer)
    if g is not None and a is not None:
        if g.unit or a.unit or g.percent or a.percent:
            return None
        if numbers_equal(g, a):
            return True
        return "rounding" if rounds_to(g, a) else False
    if re.sub(r"\s+", "", gold) == re.sub(r"\s+", "", answer):
        return True
    return symbolic(gold, answer) if symbolic is not None else None


def _combine(outcomes: list[Outcome]) -> Outcome:
    if any(o is False for o in outcomes):
        return False
    if any(o is None for o in outcomes):
        return None
    if any(o == "rounding" for o in outcomes):
        return "rounding"
    return True


def compare_intervals(gold: str, answer: str, symbolic: Symbolic | None = None) -> Outcome:
    """True / False / "rounding" when both are intervals or inequalities of the same set; None
    when either is not one (or a bare pair meets an inequality: it may be a point)."""
    g, a = read_intervals(gold), read_intervals(answer)
    if g is None or a is None:
        return None
    kinds = {g.written, a.written}
    if "pair" in kinds and "inequality" in kinds:
        return None
    if kinds == {"inequality"} or kinds == {"pair"}:
        pass  # same notation: the plain rules and math-verify do as well
    if g.variable and a.variable and g.variable != a.variable:
        return None
    if len(g.spans) != len(a.spans):
        return False if kinds <= {"interval", "inequality"} else None
    outcomes: list[Outcome] = []
    for gs, as_ in zip(sorted(g.spans, key=_order), sorted(a.spans, key=_order), strict=True):
        if (gs.low_closed, gs.high_closed) != (as_.low_closed, as_.high_closed):
            return False
        outcomes += [_value_outcome(gs.low, as_.low, symbolic),
                     _value_outcome(gs.high, as_.high, symbolic)]
    return _combine(outcomes)


def _order(span: Span) -> float:
    if span.low == "-inf":
        return float("-inf")
    n = parse_number(span.low)
    return float(n.value) if n is not None else 0.0


# matrices ------------------------------------------------------------------------------------
_MATRIX = re.compile(r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?(.*?)\\end\{\1\}", re.DOTALL)


def read_matrix(text: str) -> list[list[str]] | None:
    """The cells of a matrix written with one ``\\begin{…matrix}``, rows by ``\\\\``."""
    s = strip_math(text).strip()
    while s.startswith("(") and s.endswith(")"):
        s = s[1:-1].strip()
    s = re.sub(r"\\left\s*[(\[]|\\right\s*[)\]]", "", s).strip()
    m = _MATRIX.fullmatch(s)
    if m is None:
        return None
    rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
    cells = [[c.strip() for c in row.split("&")] for row in rows]
    return cells if cells and all(cells) else None


def compare_matrices(gold: str, answer: str) -> Outcome:
    """Cell by cell when both are matrices of numbers of the same shape; None otherwise (a
    different shape is False)."""
    g, a = read_matrix(gold), read_matrix(answer)
    if g is None or a is None:
        return None
    if [len(r) for r in g] != [len(r) for r in a]:
        return False
    outcomes = [_value_outcome(gc, ac, None) for gr, ar in zip(g, a, strict=True)
                for gc, ac in zip(gr, ar, strict=True)]
    return _combine(outcomes)  # one cell that differs decides; an unknown cell leaves it open
