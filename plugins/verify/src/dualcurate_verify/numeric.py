"""A fast "these differ" test for simple expressions, before sympy is asked.

A tiny LaTeX reader for plain arithmetic (numbers, one-letter variables, ``+ - * / ^``,
implicit products, ``\\frac``, ``\\sqrt``, ``\\pi``, ``\\cdot``, ``\\times``, brackets) evaluates
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
        left = self.factor()
        while True:
            token = self.peek()
            if token in ("*", "/"):
                self.take()
                right = self.factor()
            elif token is not None and (token[0].isalnum() or token[0] == "." or token in
                                        ("(", "{", "\\frac", "\\sqrt", "\\pi")):
                previous = self.tokens[self.pos - 1]
                if token[0].isdigit() and (previous[0].isdigit() or previous[0] == "."):
                    raise _Unsupported("two numbers side by side")
                right = self.power()  # implicit product: 2x, x(x+1), 3\sqrt{2}
            else:
                return left
            left = (lambda a, b: lambda v: a(v) / b(v))(left, right) if token == "/" else \
                (lambda a, b: lambda v: a(v) * b(v))(left, right)

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
