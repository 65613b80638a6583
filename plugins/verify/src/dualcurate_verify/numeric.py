"""A fast "these differ" test for simple expressions, before sympy is asked.

A tiny LaTeX reader for plain arithmetic (numbers, one-letter variables, ``+ - * / ^``,
implicit products (binding tighter than ``/``, as in math-verify: ``1/2x`` = 1/(2x)), ``\\frac``, ``\\sqrt``, ``\\pi``, ``\\cdot``, ``\\times``, brackets) evaluates
gold and answer at fixed points. If they differ at a point, they are not the same expression,
so math-verify could not prove them equal: the rules can say "incorrect" without it. Anything
the reader does not know (equations, sets, functions, ``e``, ``i``) returns None and goes to
math-verify as before. Equal values prove nothing; those still go to math-verify.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

Value = Callable[[dict[str, float]], float]
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|\\(frac|dfrac|tfrac|sqrt|pi|cdot|times|left|right)"
                    r"(?![A-Za-z])|([a-zA-Z])|([-+*/^(){}\[\]]))")
_VALUES = ((1.2345, 0.8765, 2.3456, 1.6180, 0.5772), (0.3141, 1.7321, 0.6931, 2.2361, 1.4142))


class _Unsupported(Exception):
    pass


# math-verify strips a trailing unit word written after a digit, a brace or a space before it
# parses (``6/5t`` is 6/5 to it: "t" is tonnes), so a text that ends like that is its call.
# The short words of its list that a variable could be taken for, plus their plurals:
_MV_UNIT_WORDS = (
    "c", "d", "g", "h", "l", "m", "o", "s", "t", "ab", "am", "bc", "by", "cc", "cm", "dm", "ft",
    "gm", "hr", "kg", "km", "lb", "lt", "mm", "mp", "mt", "pm", "rd", "rs", "sq", "st", "th",
    "yr", "are", "day", "deg", "gal", "kmh", "man", "men", "min", "mph", "mtr", "ohm", "per",
    "pie", "sec", "sue", "toy", "way", "acre", "cent", "coin", "cube", "east", "edge", "feet",
    "gain", "hour", "inch", "kmph", "less", "loss", "mark", "meal", "mile", "minw", "more",
    "noon", "pure", "rise", "tile", "unit", "west", "yard", "year", "apple", "cubic", "digit",
    "liter", "litre", "meter", "metre", "month", "pound", "prime", "ratio", "rupee", "woman",
    "women", "degree", "excess", "gallon", "inches", "minute", "monkey", "number", "profit",
    "rounds", "second", "square", "surface", "hectare", "soldier", "student", "decrease",
    "increase", "multiple", "point", "integer")
MV_UNIT_TAIL = re.compile(r"(?:\d|\}|\s)\s*(?:" + "|".join(sorted(_MV_UNIT_WORDS, key=len,
                                                                  reverse=True))
                          + r")(?:s|es)?\s*$", re.IGNORECASE)


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _Unsupported(text[pos:pos + 10])
        number, command, letter, op = m.groups()
        if command in ("left", "right"):
            pass  # \left( is just (
        elif command in ("cdot", "times"):
            out.append("*")
        elif command:
            out.append("\\" + ("frac" if command.endswith("frac") else command))
        elif letter:
            if letter in "eiEI":
                raise _Unsupported(letter)
            out.append(letter)
        else:
            out.append(number or op)
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise _Unsupported(f"expected {expected}")
        self.pos += 1
        return token

    def expr(self) -> Value:
        left = self.term()
        while self.peek() in ("+", "-"):
            op, right = self.take(), self.term()
            left = (lambda a, b: lambda v: a(v) + b(v))(left, right) if op == "+" else \
                (lambda a, b: lambda v: a(v) - b(v))(left, right)
        return left

    def term(self) -> Value:
        # ``*``, ``\\cdot`` and ``/`` join products, left to right; a juxtaposed product binds
        # tighter (``1/2x`` is 1/(2x), ``3/4(x+1)`` is 3/(4(x+1))), as math-verify reads them
        left = self.product(self.factor())
        while self.peek() in ("*", "/"):
            token = self.take()
            right = self.product(self.factor())
            left = (lambda a, b: lambda v: a(v) / b(v))(left, right) if token == "/" else \
                (lambda a, b: lambda v: a(v) * b(v))(left, right)
        return left

    def product(self, left: Value) -> Value:
        """An implicit product: 2x, x(x+1), 3\\sqrt{2}, \\frac{1}{2}x."""
        while True:
            token = self.peek()
            if token is None or not (token[0].isalnum() or token[0] == "." or token in
                                     ("(", "{", "\\frac", "\\sqrt", "\\pi")):
                return left
            previous = self.tokens[self.pos - 1]
            if token[0].isdigit() and (previous[0].isdigit() or previous[0] == "."):
                raise _Unsupported("two numbers side by side")
            if token == "\\frac" and not (previous.isalpha() or previous == "\\pi"):
                # math-verify reads a \frac after anything that comes out a whole number as a
                # mixed number: 1\frac{1}{2}, (2)\frac{1}{2}, \frac{1}{1}\frac{1}{1} are sums
                raise _Unsupported("a possible mixed number: 1\\frac{1}{2} is 1 + 1/2")
            if token[0].isdigit() and previous in ("}", ")"):
                raise _Unsupported("a number after a group: x^{2}3 or \\frac{1}{2}3")
            if token == "(" and (previous.isalpha() or previous == "\\pi"):
                raise _Unsupported("f(2) may be a function applied, not a product")
            if (token == "(" and self._number_group(self.pos)) or \
                    (previous == ")" and self._number_group_before(self.pos)):
                raise _Unsupported("2(3): math-verify does not read it as a product")
            right = self.power()
            left = (lambda a, b: lambda v: a(v) * b(v))(left, right)

    def _number_group(self, at: int) -> bool:
        """Whether a number in brackets, ``(3)`` or ``((3))``, starts at token ``at``."""
        depth = 0
        while at + depth < len(self.tokens) and self.tokens[at + depth] == "(":
            depth += 1
        return depth > 0 and self._bracketed_number(at, depth)

    def _number_group_before(self, end: int) -> bool:
        """Whether a number in brackets, ``(3)`` or ``((3))``, ends just before token ``end``."""
        depth = 0
        while end - 1 - depth >= 0 and self.tokens[end - 1 - depth] == ")":
            depth += 1
        return depth > 0 and self._bracketed_number(end - 2 * depth - 1, depth)

    def _bracketed_number(self, at: int, depth: int) -> bool:
        group = self.tokens[at:at + 2 * depth + 1] if at >= 0 else []
        return len(group) == 2 * depth + 1 and group[:depth] == ["("] * depth and \
            group[depth + 1:] == [")"] * depth and (group[depth][0].isdigit()
                                                    or group[depth][0] == ".")

    def factor(self) -> Value:
        if self.peek() in ("+", "-"):
            op, inner = self.take(), self.factor()
            return inner if op == "+" else (lambda a: lambda v: -a(v))(inner)
        return self.power()

    def power(self) -> Value:
        base = self.primary()
        if self.peek() == "^":
            self.take()
            token = self.peek() or ""
            if token[:1].isdigit() and len(token) > 1:
                raise _Unsupported("x^23 means x^2·3 in LaTeX")
            if self.peek() == "-":
                self.take()
                exponent = (lambda a: lambda v: -a(v))(self.primary())
            else:
                exponent = self.primary()
            return (lambda a, b: lambda v: a(v) ** b(v))(base, exponent)
        return base

    def group(self) -> Value:
        self.take("{")
        inner = self.expr()
        self.take("}")
        return inner

    def primary(self) -> Value:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            number = float(token)
            return lambda v: number
        if token.isalpha():
            return lambda v: v[token]
        if token == "\\pi":
            return lambda v: math.pi
        if token in ("(", "[") or token == "{":
            inner = self.expr()
            self.take({"(": ")", "[": "]", "{": "}"}[token])
            return inner
        if token == "\\frac":
            num, den = self.group(), self.group()
            return lambda v: num(v) / den(v)
        if token == "\\sqrt":
            if self.peek() == "[":
                raise _Unsupported("nth root")
            inner = self.group() if self.peek() == "{" else self.primary()
            return lambda v: math.sqrt(inner(v))
        raise _Unsupported(token)


def compile_expression(text: str) -> tuple[Value, set[str]] | None:
    """A function of the variables, and their names; None when the text is not plain
    arithmetic this reader knows."""
    if MV_UNIT_TAIL.search(text):
        return None  # math-verify drops that tail as a unit
    try:
        tokens = _tokens(text)
        if not tokens:
            return None
        parser = _Parser(tokens)
        value = parser.expr()
        if parser.pos != len(tokens):
            return None
    except (_Unsupported, ValueError, RecursionError):
        return None
    return value, {t for t in tokens if t.isalpha() and len(t) == 1}


def values_differ(gold: str, answer: str) -> bool:
    """True only when both are plain arithmetic and their values differ at a test point."""
    compiled_gold, compiled_answer = compile_expression(gold), compile_expression(answer)
    if compiled_gold is None or compiled_answer is None:
        return False
    (g, g_vars), (a, a_vars) = compiled_gold, compiled_answer
    names = sorted(g_vars | a_vars)
    if len(names) > len(_VALUES[0]):
        return False
    for values in _VALUES:
        point = dict(zip(names, values, strict=False))
        try:
            gv, av = g(point), a(point)
        except (ArithmeticError, ValueError, TypeError):
            continue  # outside a domain here (sqrt of a negative): try the next point
        if isinstance(gv, complex) or isinstance(av, complex):
            continue
        if not (math.isfinite(gv) and math.isfinite(av)):
            continue
        if abs(gv - av) > 1e-6 * max(1.0, abs(gv), abs(av)):
            return True
    return False
