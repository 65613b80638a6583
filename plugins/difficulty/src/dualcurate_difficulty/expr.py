"""A safe parser for keep rules: boolean expressions over a row's columns.

The grammar is a small subset of Python expressions, checked node by node on the ``ast`` tree
and compiled into plain closures; no user string is ever passed to ``eval``:

* comparisons ``==  !=  <  <=  >  >=`` (chains like ``0.2 <= pass_rate <= 0.8`` too) and
  ``in`` / ``not in`` against a literal tuple or list of constants;
* ``and``, ``or``, ``not`` and parentheses;
* column names, numbers (a leading ``-`` included), strings, ``True``, ``False``, ``None``.

Anything else (calls, attribute access, subscripts, lambdas, arithmetic, comprehensions, ...)
is rejected with a :class:`KeepExpressionError` naming the expression and the offending part.
Ordering comparisons with a missing (``None``) value are false, as in SQL's ``WHERE``.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_EXPRESSION_LENGTH = 2000
MAX_DEPTH = 50

PRESETS: dict[str, str] = {
    "hard": "pass_rate == 0",
    "nontrivial": "pass_rate < 1",
}

_ALLOWED = ("comparisons (== != < <= > >= in, not in), and/or/not, parentheses, column names, "
            "numbers, strings, True/False/None")

Evaluator = Callable[[Mapping[str, Any]], Any]


class KeepExpressionError(ValueError):
    """A keep rule that is not a valid (safe) boolean expression, or that fails on a row."""


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


@dataclass(frozen=True)
class KeepExpression:
    """A parsed keep rule: ``evaluate(row) -> bool``; ``names`` are the columns it reads."""

    source: str
    names: frozenset[str]
    _evaluate: Evaluator

    def evaluate(self, row: Mapping[str, Any]) -> bool:
        missing = [n for n in sorted(self.names) if n not in row]
        if missing:
            have = ", ".join(sorted(row)) or "(none)"
            raise KeepExpressionError(
                f"keep expression {self.source!r}: column(s) {', '.join(missing)} not in the "
                f"row (columns: {have}); name a column an earlier stage adds")
        try:
            return bool(self._evaluate(row))
        except TypeError as exc:
            raise KeepExpressionError(
                f"keep expression {self.source!r}: cannot compare these values ({exc}); compare "
                f"numbers with numbers and strings with strings") from None

    def __call__(self, row: Mapping[str, Any]) -> bool:
        return self.evaluate(row)


def parse_keep(expression: str) -> KeepExpression:
    """Parse a keep rule (or a preset name: ``hard``, ``nontrivial``) into a
    :class:`KeepExpression`; raise :class:`KeepExpressionError` for anything outside the
    grammar."""
    if not isinstance(expression, str):
        raise KeepExpressionError(f"keep expression {expression!r}: must be a string")
    source = PRESETS.get(expression.strip(), expression)
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise KeepExpressionError(
            f"keep expression {source[:40]!r}...: longer than {MAX_EXPRESSION_LENGTH} "
            f"characters; simplify it")
    if not source.strip():
        raise KeepExpressionError("keep expression '': empty; write a rule such as "
                                  "'pass_rate == 0'")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise KeepExpressionError(
            f"keep expression {source!r}: not a valid expression ({exc.msg}); allowed: "
            f"{_ALLOWED}") from None
    except (RecursionError, MemoryError, ValueError):
        raise KeepExpressionError(f"keep expression {source!r}: too deeply nested or "
                                  f"malformed; simplify it") from None
    names: set[str] = set()
    evaluate = _Compiler(source, names).compile(tree.body, 0)
    return KeepExpression(source=source, names=frozenset(names), _evaluate=evaluate)


class _Compiler:
    """Turns an allowed ``ast`` node into a closure; rejects every other node."""

    def __init__(self, source: str, names: set[str]):
        self.source = source
        self.names = names

    def reject(self, node: ast.AST, what: str | None = None) -> KeepExpressionError:
        part = ast.get_source_segment(self.source.strip(), node) or type(node).__name__
        what = what or f"{type(node).__name__} ({part!r})"
        return KeepExpressionError(
            f"keep expression {self.source!r}: {what} is not allowed; allowed: {_ALLOWED}")

    def compile(self, node: ast.AST, depth: int) -> Evaluator:
        if depth > MAX_DEPTH:
            raise KeepExpressionError(f"keep expression {self.source!r}: nested deeper than "
                                      f"{MAX_DEPTH}; simplify it")
        if isinstance(node, ast.BoolOp):
            parts = [self.compile(v, depth + 1) for v in node.values]
            if isinstance(node.op, ast.And):
                return lambda row: all(p(row) for p in parts)
            return lambda row: any(p(row) for p in parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.compile(node.operand, depth + 1)
            return lambda row: not inner(row)
        if isinstance(node, ast.Compare):
            return self.compile_compare(node, depth)
        return self.compile_operand(node, depth)

    def compile_compare(self, node: ast.Compare, depth: int) -> Evaluator:
        operands = [self.compile_operand(node.left, depth + 1)]
        ops: list[tuple[Callable[[Any, Any], bool], bool]] = []
        for op, right in zip(node.ops, node.comparators, strict=True):
            func = _COMPARE.get(type(op))
            if func is None:
                raise self.reject(node, f"the operator {type(op).__name__}")
            if isinstance(op, ast.In | ast.NotIn):
                operands.append(self.compile_collection(right))
            else:
                operands.append(self.compile_operand(right, depth + 1))
            ops.append((func, isinstance(op, _ORDERING)))

        def compare(row: Mapping[str, Any]) -> bool:
            left = operands[0](row)
            for (func, ordering), right_eval in zip(ops, operands[1:], strict=True):
                right = right_eval(row)
                if ordering and (left is None or right is None):
                    return False
                if not func(left, right):
                    return False
                left = right
            return True

        return compare

    def compile_collection(self, node: ast.AST) -> Evaluator:
        if not isinstance(node, ast.Tuple | ast.List):
            raise self.reject(node, "the right side of `in` must be a literal tuple or list, "
                                    f"not {type(node).__name__}; it")
        values = tuple(self.constant(elt) for elt in node.elts)
        return lambda row: values

    def compile_operand(self, node: ast.AST, depth: int) -> Evaluator:
        if isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load) or node.id.startswith("__"):
                raise self.reject(node, f"the name {node.id!r}")
            self.names.add(node.id)
            key = node.id
            return lambda row: row[key]
        if isinstance(node, ast.Constant) or (
                isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)):
            value = self.constant(node)
            return lambda row: value
        if isinstance(node, ast.BoolOp | ast.Compare) or (
                isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
            return self.compile(node, depth + 1)
        raise self.reject(node)

    def constant(self, node: ast.AST) -> Any:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = node.operand
            if isinstance(inner, ast.Constant) and type(inner.value) in (int, float):
                return -inner.value if isinstance(node.op, ast.USub) else inner.value
            raise self.reject(node, "a sign before something other than a number")
        if isinstance(node, ast.Constant) and (node.value is None
                                               or type(node.value) in (bool, int, float, str)):
            return node.value
        raise self.reject(node)
