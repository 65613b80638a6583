"""A generated (gold, response) corpus for measuring agreement with plain math-verify.

Used by ``test_agreement_corpus.py`` (through hypothesis) and by
``benchmarks/verify_throughput.py``. Each pair carries a ``kind`` and whether it is one of the
documented deliberate departures from math-verify (``departure``: an inequality answer to an
interval gold, which math-verify rejects and we accept; different units, which math-verify
ignores and we leave undecided), with the verdict our rules promise instead (``expected``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from hypothesis import strategies as st

WRAPS = ("\\boxed{{{}}}", "The answer is ${}$.", "${}$", "So we get $\\boxed{{{}}}$.",
         "Final Answer: The final answer is ${}$. I hope it is correct.")


@dataclass(frozen=True)
class Pair:
    kind: str
    gold: str
    response: str
    departure: bool = False
    expected: str | None = None  # our promised verdict for a departure


def _frac(p: int, q: int) -> str:
    return f"\\frac{{{p}}}{{{q}}}"


@st.composite
def implicit_products(draw: st.DrawFn) -> tuple[str, str, str]:
    """``1/2x`` is 1/(2x) to math-verify; ``\\frac{1}{2}x`` is x/2."""
    a, b = draw(st.integers(1, 9)), draw(st.integers(2, 9))
    v, w = draw(st.sampled_from("xyt")), draw(st.sampled_from("abn"))
    gold = draw(st.sampled_from([f"\\frac{{{a}}}{{{b}{v}}}", f"\\frac{{{a}}}{{{b}}}{v}",
                                 f"\\frac{{{a}{v}}}{{{b}{w}}}", f"{a}{v}/{b}",
                                 f"\\frac{{{a}}}{{{b}}}({v}+1)"]))
    answer = draw(st.sampled_from([f"{a}/{b}{v}", f"{a}/{b} {v}", f"\\frac{{{a}}}{{{b}}}{v}",
                                   f"{a}{v}/{b}", f"{a}/({b}{v})", f"{a}{v}/{b}{w}",
                                   f"{a}/{b}({v}+1)", f"\\frac{{{a}({v}+1)}}{{{b}}}",
                                   f"{a} \\cdot {v}/{b}", f"{a}{v}/({b}{w})"]))
    return "implicit-product", gold, answer


@st.composite
def numbers(draw: st.DrawFn) -> tuple[str, str, str]:
    p, q = draw(st.integers(-50, 99)), draw(st.sampled_from([1, 2, 4, 5, 8, 3, 7]))
    value = Fraction(p, q)
    gold = str(p) if q == 1 else draw(st.sampled_from([_frac(p, q) if p >= 0 else
                                                       f"-{_frac(-p, q)}", f"{p}/{q}"]))
    forms = [str(p) if q == 1 else f"{p}/{q}", gold]
    if q in (1, 2, 4, 5, 8):
        forms.append(str(float(value)))
    wrong = [str(p + 1) if q == 1 else f"{p + 1}/{q}", str(float(value) + 0.5)]
    return "number", gold, draw(st.sampled_from(forms + wrong))


@st.composite
def intervals(draw: st.DrawFn) -> tuple[str, str, str]:
    lo = draw(st.integers(-9, 5))
    hi = lo + draw(st.integers(1, 9))
    lc, hc = draw(st.booleans()), draw(st.booleans())
    ops = {True: "\\le", False: "<"}
    ge = {True: "\\ge", False: ">"}

    def interval(l_: int, h: int, a: bool, b: bool) -> str:
        return f"{'[' if a else '('}{l_},{h}{']' if b else ')'}"

    shapes = {
        "interval": interval(lo, hi, lc, hc),
        "member": f"x \\in {interval(lo, hi, lc, hc)}",
        "inequality": f"{lo} {ops[lc]} x {ops[hc]} {hi}",
        "ray": f"[{lo},\\infty)" if lc else f"({lo},\\infty)",
        "ray-inequality": f"x {ge[lc]} {lo}",
    }
    wrong = {
        "interval": interval(lo, hi, not lc, hc), "member": f"x \\in {interval(lo, hi + 1, lc, hc)}",
        "inequality": f"{lo} {ops[not lc]} x {ops[hc]} {hi}",
        "ray": f"({lo},\\infty)" if lc else f"[{lo},\\infty)",
        "ray-inequality": f"x {ge[not lc]} {lo}",
    }
    family = draw(st.sampled_from(["bounded", "ray"]))
    names = ["interval", "member", "inequality"] if family == "bounded" else ["ray", "ray-inequality"]
    gold_shape, answer_shape = draw(st.sampled_from(names)), draw(st.sampled_from(names))
    right = draw(st.booleans())
    answer = shapes[answer_shape] if right else wrong[answer_shape]
    kind = "interval"
    bare_pair = gold_shape == "interval" and not lc and not hc  # (3,7) may be a point
    if "inequality" in answer_shape and "inequality" not in gold_shape and not bare_pair:
        # math-verify rejects an inequality for an interval gold; we read both as the set
        kind = f"interval-departure-{'correct' if right else 'incorrect'}"
    return kind, shapes[gold_shape], answer


@st.composite
def sets(draw: st.DrawFn) -> tuple[str, str, str]:
    items = draw(st.lists(st.integers(-9, 20), min_size=2, max_size=4, unique=True))
    gold = "\\{" + ",".join(map(str, items)) + "\\}"
    shuffled = draw(st.permutations(items))
    if draw(st.booleans()):
        shuffled = [*shuffled[:-1], shuffled[-1] + 30]
    return "set", gold, "\\{" + ", ".join(map(str, shuffled)) + "\\}"


@st.composite
def matrices(draw: st.DrawFn) -> tuple[str, str, str]:
    cells = draw(st.lists(st.integers(-9, 9), min_size=4, max_size=4))
    env = draw(st.sampled_from(["pmatrix", "bmatrix"]))

    def matrix(values: list[str]) -> str:
        return (f"\\begin{{{env}}}{values[0]} & {values[1]} \\\\ {values[2]} & {values[3]}"
                f"\\end{{{env}}}")

    gold = matrix([_frac(c, 2) for c in cells])
    answer = [str(c / 2) for c in cells]
    if draw(st.booleans()):
        i = draw(st.integers(0, 3))
        answer[i] = str(cells[i] / 2 + 1)
    return "matrix", gold, matrix(answer)


@st.composite
def units(draw: st.DrawFn) -> tuple[str, str, str]:
    n = draw(st.integers(1, 500))
    unit = draw(st.sampled_from(["cm", "m", "kg", "s"]))
    gold = draw(st.sampled_from([str(n), f"{n}\\text{{ {unit}}}", f"{n} \\text{{{unit}}}"]))
    m = n if draw(st.booleans()) else n + draw(st.integers(1, 9))
    other = draw(st.sampled_from(["cm", "m", "kg", "s"]))
    answer = draw(st.sampled_from([str(m), f"{m}\\text{{ {unit}}}", f"{m}\\text{{ {other}}}"]))
    g_unit = unit if "text" in gold else ""
    a_unit = (unit if f"{{ {unit}}}" in answer else other) if "text" in answer else ""
    kind = "unit-departure" if g_unit and a_unit and g_unit != a_unit else "unit"
    return kind, gold, answer


@st.composite
def percentages(draw: st.DrawFn) -> tuple[str, str, str]:
    n = draw(st.integers(1, 99))
    gold = draw(st.sampled_from([f"{n}\\%", str(n)]))
    m = n if draw(st.booleans()) else n + draw(st.integers(1, 9))
    answer = draw(st.sampled_from([f"{m}\\%", str(m), f"{m}"]))
    return "percent", gold, answer


@st.composite
def choices(draw: st.DrawFn) -> tuple[str, str, str]:
    gold = draw(st.sampled_from("ABCDE"))
    letter = gold if draw(st.booleans()) else draw(st.sampled_from("ABCDE"))
    return "choice", gold, draw(st.sampled_from([letter, f"({letter})"]))


KINDS = (implicit_products, numbers, intervals, sets, matrices, units, percentages, choices)


@st.composite
def _wrapped(draw: st.DrawFn, kind: st.SearchStrategy[tuple[str, str, str]]) -> Pair:
    name, gold, answer = draw(kind)
    response = draw(st.sampled_from(WRAPS)).format(answer)
    departure = "-departure" in name
    expected = None
    if name == "unit-departure":
        expected = "undecided"  # no conversion: 5 m is not 5 cm, whatever math-verify says
    elif departure:
        expected = name.rsplit("-", 1)[1]
    return Pair(name.split("-departure")[0], gold, response, departure, expected)


def pairs() -> st.SearchStrategy[Pair]:
    """One pair of any kind."""
    return st.one_of(*(_wrapped(kind()) for kind in KINDS))


def corpus(per_kind: int = 30) -> st.SearchStrategy[list[Pair]]:
    """``per_kind`` pairs of every kind."""
    return st.tuples(*(st.lists(_wrapped(kind()), min_size=per_kind, max_size=per_kind)
                       for kind in KINDS)).map(lambda groups: [p for g in groups for p in g])


def math_verify_verdict(gold: str, response: str) -> bool | None:
    """Plain math-verify, gold first, as a user would call it; None when it cannot parse both
    (then it decides nothing). Call from the main thread only (its timeouts are off here)."""
    from math_verify import parse, verify

    g = parse(f"${gold}$", parsing_timeout=None)
    r = parse(response, parsing_timeout=None)
    decided = any(not isinstance(x, str) for x in g) and any(not isinstance(x, str) for x in r)
    if not decided:
        return None
    return bool(verify(g, r, timeout_seconds=None))
