"""Normalisation of short answers: LaTeX wrappers, numbers, choice letters and plain text.

Everything here is pure Python and fast (no sympy): these are the rules that decide most
answers before the symbolic step is ever needed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction

_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|textnormal|textrm|textsf|texttt|mathrm|mathbf|"
                       r"mbox|hbox|operatorname|emph)\s*\{([^{}]*)\}")
_MATH_DELIMS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))
_SPACING = re.compile(r"\\[,;:!>]|\\quad|\\qquad|~|\\ ")


def find_braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the balanced ``{...}`` opening at ``text[start]`` and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


_BOX_CMD = re.compile(r"\\(?:boxed|fbox)\s*")
_DANGLING_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{?\s*$")


_BOX_SEPARATOR = re.compile(r"\b(?:and|or)\b|,|;")


def matching_braces(text: str) -> dict[int, int]:
    """Index of every ``{`` that is closed -> index of its ``}`` (one linear pass)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
    return pairs


MAX_BOXES = 16


def _box_spans(text: str) -> list[tuple[int, int]]:
    """(start of the command, index of the closing brace) of every closed ``\\boxed{…}`` /
    ``\\fbox{…}``, in order; contents are sliced only for the boxes that are used."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    pairs = matching_braces(text)
    spans = []
    for m in _BOX_CMD.finditer(text):
        close = pairs.get(m.end())
        if close is not None:
            spans.append((m.start(), m.end(), close))
    return [(start, close) for start, _, close in spans]


def _content(text: str, start: int, close: int) -> str:
    return text[text.index("{", start) + 1:close]


def box_positions(text: str) -> list[tuple[int, int]]:
    """(start, index of the closing brace) of every closed box, in order."""
    return _box_spans(text)


def box_text(text: str, start: int, close: int) -> str:
    """The content of the box at ``start`` closed at ``close``."""
    return _content(text, start, close)


def final_boxes(text: str) -> list[str]:
    """The last box and the boxes written together with it (as math-verify groups them: less
    than 10 characters apart, or less than 70 with "and", "or", "," or ";" between); at most
    ``MAX_BOXES``."""
    spans = _box_spans(text)
    if not spans:
        return []
    group = [spans[-1]]
    for start, close in reversed(spans[:-1]):
        if len(group) >= MAX_BOXES:
            break
        between = text[close + 1:group[0][0]]
        if len(between) < 10 or (len(between) < 70 and _BOX_SEPARATOR.search(between)):
            group.insert(0, (start, close))
        else:
            break
    return [_content(text, start, close).strip() for start, close in group]


def boxed_contents(text: str, last: int | None = None) -> list[str]:
    """``\\boxed{...}`` / ``\\fbox{...}`` contents in order (balanced braces); with ``last``
    only the last that many."""
    spans = _box_spans(text)
    if last is not None:
        spans = spans[-last:]
    return [_content(text, start, close) for start, close in spans]


def strip_math(text: str) -> str:
    """Remove outer math delimiters, ``\\boxed{}``, text wrappers and trailing punctuation."""
    s = unicodedata.normalize("NFKC", text).strip()
    for _ in range(4):
        before = s
        m = _BOX_CMD.match(s)
        if m:
            got = find_braced(s, m.end())
            if got is not None and not s[got[1]:].strip(" $."):
                s = got[0].strip()
        for left, right in _MATH_DELIMS:
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left):len(s) - len(right)].strip()
                break
        s = _WRAPPERS.sub(lambda m: m.group(1), s)
        s = _DANGLING_BOX.sub("", s)
        s = s.replace("**", "").strip()
        s = s.rstrip(".;").strip()
        if s == before:
            break
    return s


# numbers ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Number:
    """A parsed numeric answer: exact value, whether it was a decimal (rounded compare), a
    percent sign and a unit (lower-cased, may be empty)."""

    value: Fraction
    is_decimal: bool
    percent: bool
    unit: str
    decimals: int = 0  # digits after the decimal point, as written (None-like 0 for integers)


_UNIT_WORDS = r"[A-Za-z][A-Za-z]*(?:\s*(?:\^\s*\{?\d\}?|[²³]))?(?:\s*/\s*[A-Za-z]+)?"
_NUMBER_RE = re.compile(
    r"""^(?P<currency>\\?\$|€|£|¥|USD\s*)?\s*
        (?P<sign>[-+])?\s*
        (?:
          \\[dt]?frac\s*\{\s*(?P<fnum>\d+)\s*\}\s*\{\s*(?P<fden>\d+)\s*\}
        | (?P<snum>\d+)\s*/\s*(?P<sden>\d+)
        | (?P<num>[1-9]\d{0,2}(?:(?P<tsep>[,\s'])\d{3})(?:(?P=tsep)\d{3})*(?:\.\d+)?
               |\d+(?:[.,]\d+)?|[.,]\d+)
        )\s*
        (?P<percent>\\?%|\s*percent\b|\s*pct\b)?\s*
        (?P<degree>\^\s*\{?\s*\\circ\s*\}?|°|\s*degrees?\b)?\s*
        (?P<unit>(?:\\?text\{[^{}]*\}|\\mathrm\{[^{}]*\}|""" + _UNIT_WORDS + r"""))?\s*$""",
    re.VERBOSE,
)
_MINUS = str.maketrans({"−": "-", "–": "-", "—": "-", "\u2009": " ", "\u202f": " ", "\xa0": " "})
_ONE_LETTER_UNITS = frozenset({"m", "s", "g", "l", "h", "w", "v", "j"})
_NOT_UNITS = frozenset({"or", "and", "to", "is", "not", "x", "i", "e", "pi", "n", "k"})


def parse_number(text: str) -> Number | None:
    """Parse a whole answer as one number, or None. Handles thousands separators (``7,425,000``,
    ``1 000``, ``1{,}000``), decimal commas (``3,5``), fractions (``3/4``, ``\\frac{3}{4}``),
    percent, currency and a trailing unit (``45°``, ``5 cm``, ``12 \\text{m}``)."""
    s = strip_math(text).translate(_MINUS)
    s = re.sub(r",\\!\s*", ",", s)
    s = re.sub(r"\s*\{\s*,\s*\}\s*", ",", s).replace("\\!", "").replace("\\,", " ").replace("\\ ", " ")
    s = s.replace("\\%", "%").replace("\\$", "$").strip()
    if not s or len(s) > 60:
        return None
    m = _NUMBER_RE.match(s)
    if m is None:
        return None
    sign = -1 if m.group("sign") == "-" else 1
    is_decimal = False
    decimals = 0
    if m.group("fnum") is not None:
        den = int(m.group("fden"))
        if den == 0:
            return None
        value = Fraction(int(m.group("fnum")), den)
    elif m.group("snum") is not None:
        den = int(m.group("sden"))
        if den == 0:
            return None
        value = Fraction(int(m.group("snum")), den)
    else:
        raw = m.group("num")
        tsep = m.group("tsep")
        if tsep:
            raw = raw.replace(tsep, "")
        elif "," in raw:
            raw = raw.replace(",", ".")  # decimal comma: "3,5"; "1,000" matched tsep above
        is_decimal = "." in raw
        decimals = len(raw.split(".", 1)[1]) if is_decimal else 0
        value = Fraction(raw)
    unit = (m.group("unit") or "").strip()
    unit = re.sub(r"\\?(?:text|mathrm)\{([^{}]*)\}", r"\1", unit).strip().lower()
    if unit in _NOT_UNITS:
        return None
    if unit and m.group("snum") is not None and not m.group("degree"):
        return None  # "3/4 y" is 3/(4y) to math-verify: a product, not a fraction and a unit
    if len(unit) == 1 and unit not in _ONE_LETTER_UNITS and not m.group("degree"):
        return None  # "\\frac{8}{6}y": a variable, not a unit
    if m.group("degree"):
        unit = unit or "degree"
    return Number(sign * value, is_decimal, bool(m.group("percent")), unit, decimals)


def _round6(value: Fraction) -> Fraction:
    return round(value, 6)


def numbers_equal(gold: Number, answer: Number) -> bool | None:
    """True/False when the values decide it; None when only units disagree (a conversion the
    rules do not attempt). Decimals compare after rounding to 6 places (as math-verify does);
    a percent sign may be dropped on either side (``50%`` vs ``50``) or applied (vs ``0.5``)."""
    if gold.unit and answer.unit and gold.unit != answer.unit \
            and not {gold.unit, answer.unit} <= {"degree", "degrees", "°"}:
        return None

    def same(a: Fraction, b: Fraction) -> bool:
        if gold.is_decimal or answer.is_decimal:
            return _round6(a) == _round6(b)
        return a == b

    if same(gold.value, answer.value):
        return True
    if answer.percent and not gold.percent:
        return same(gold.value, answer.value / 100)
    if gold.percent and not answer.percent:
        return same(gold.value / 100, answer.value)
    return False


def rounds_to(gold: Number, answer: Number) -> bool:
    """True when ``answer`` is ``gold`` rounded to fewer decimal places than the gold has
    (``0.33`` for 1/3, ``3.14`` for 3.14159): a candidate for "equal after reasonable
    rounding", which the rules leave to a judge."""
    if not answer.is_decimal or gold.unit != answer.unit or answer.percent != gold.percent:
        return False
    if gold.is_decimal and gold.decimals <= answer.decimals:
        return False  # as precise as the gold: plain comparison already said no
    if gold.value == round(gold.value, answer.decimals):
        return False  # the gold has no more digits to round away
    if abs(answer.value) < Fraction(1, 10):
        return False
    return round(gold.value, answer.decimals) == answer.value


# choice letters -------------------------------------------------------------------------------
_LETTER_ONLY = re.compile(r"^[\(\[]?([A-J])[\)\]]?[.:]?$")
_LETTER_LEAD = re.compile(r"^(?:(?:option|choice|answer)\s*)?(?:[\(\[]([A-J])[\)\]]|([A-J])[.:)])\s*(.*)$",
                          re.IGNORECASE | re.DOTALL)
_LETTER_WORD = re.compile(r"^(?:option|choice)\s+([A-J])\b\s*(.*)$", re.IGNORECASE | re.DOTALL)
_LETTER_LIST = re.compile(r"^[\(\[]?[A-J][\)\]]?(?:\s*(?:,|;|/|&|\band\b|\bor\b|\s)\s*[\(\[]?[A-J][\)\]]?)+$")
_LETTER_RUN = re.compile(r"^[A-J]{2,10}$")


def _short(text: str, limit: int = 200) -> str | None:
    """Unwrapped text with single spaces, or None when too long to be an option answer."""
    if len(text) > 4 * limit:
        return None
    s = " ".join(strip_math(text).split())
    return s if len(s) <= limit else None


def choice_letter(text: str) -> tuple[str, str] | None:
    """A single option letter and the text after it: ``(B) 45°`` -> ("B", "45°"), ``B`` ->
    ("B", ""). A bare article ("A triangle") is not a letter."""
    s = _short(text)
    if s is None:
        return None
    m = _LETTER_ONLY.match(s)
    if m:
        return m.group(1), ""
    m = _LETTER_WORD.match(s)
    if m:
        return m.group(1).upper(), m.group(2).strip()
    m = _LETTER_LEAD.match(s)
    if m:
        letter = m.group(1) or m.group(2)
        if letter.isupper() or m.group(1):
            return letter.upper(), m.group(3).strip()
    return None


def choice_letters(text: str) -> set[str] | None:
    """Several letters (``A, C``, ``A and C``, ``AC``) as a set, or None."""
    s = _short(text)
    if s is None:
        return None
    if _LETTER_LIST.match(s):
        return set(re.findall(r"[A-J]", s))
    if _LETTER_RUN.match(s):
        return set(s)
    single = choice_letter(s)
    return {single[0]} if single and not single[1] else None


def is_choice_gold(gold: str) -> bool:
    """Whether a gold answer is an option letter (or a set of them)."""
    s = _short(gold)
    return s is not None and bool(_LETTER_ONLY.match(s) or _LETTER_LIST.match(s))


# text ---------------------------------------------------------------------------------------
_ARTICLES = re.compile(r"^(?:(?:the|a|an)\s+)+")
_EDGE_PUNCT = re.compile(r"^[\s.,;:!?\"'`]+|[\s.,;:!?\"'`]+$")


def normalise_text(text: str) -> str:
    """Lower-cased, unwrapped text without spacing commands, edge punctuation or spaces
    around operators, for exact comparison (``(0,9)`` and ``[0,9)`` stay different)."""
    # whitespace first: a control character such as \x1f after a backslash would otherwise
    # become "\ " (a spacing command) only after the spacing commands were removed
    s = re.sub(r"\s+", " ", strip_math(text).lower())
    while True:  # "\\~" becomes "\\ " (itself a spacing command) once "~" is gone
        spaced = _SPACING.sub(" ", s)
        if spaced == s:
            break
        s = spaced
    s = _ARTICLES.sub("", s)
    s = _EDGE_PUNCT.sub("", s)
    s = re.sub(r"\s+", " ", s)
    return re.sub(r"\s*([,;:{}()\[\]^_=+\-*/<>|])\s*", r"\1", s)


_MATH_WORDS = frozenset({
    "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "frac", "dfrac",
    "tfrac", "pi", "theta", "alpha", "beta", "gamma", "delta", "infty", "cdot", "times", "le",
    "ge", "leq", "geq", "neq", "in", "cup", "cap", "left", "right", "arcsin", "arccos",
    "arctan", "sinh", "cosh", "tanh", "max", "min", "mod", "pmod", "circ", "pm", "mp", "lim",
    "det", "vec", "overline", "hat", "bar", "mathbb", "begin", "end", "pmatrix", "bmatrix",
    "matrix", "quad", "qquad", "dots", "ldots", "cdots", "emptyset", "varnothing", "neg",
    "land", "lor", "to", "rightarrow", "sum", "prod", "int", "mathrm", "operatorname", "binom",
    "choose", "lfloor", "rfloor", "lceil", "rceil", "angle", "triangle", "perp", "parallel",
    "sim", "approx", "equiv", "div", "displaystyle", "or", "and", "dx", "align", "aligned",
    "array", "cases", "equation", "gather",
})
_WORD = re.compile(r"\\?[A-Za-z]{2,}")
_ENVIRONMENT = re.compile(r"\\(?:begin|end)\s*\{[^{}]*\}")
_SHORT_WORDS = frozenset({"is", "it", "no", "of", "an", "am", "be", "at", "on", "we", "so", "if",
                          "by", "as", "up"})


def looks_textual(text: str) -> bool:
    """Whether an answer is prose or a word (``Evelyn``, ``the red one``) rather than math.
    sympy reads words as products of symbols (``Evelyn`` equals ``Evelny``), so words never
    go through it. Upper-case runs (``AB``, ``NO``) are geometry names, not words."""
    s = _ENVIRONMENT.sub(" ", text)
    s = re.sub(r"\\text\{([^{}]*)\}", r" \1 ", s)
    for word in _WORD.findall(s):
        if word.startswith("\\") or word.isupper():
            continue
        if word.lower() not in _MATH_WORDS and (len(word) >= 3 or word.lower() in _SHORT_WORDS):
            return True
    return False
