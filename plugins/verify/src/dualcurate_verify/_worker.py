"""The symbolic worker: a child process that runs math-verify (sympy) for the parent.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout; the first line
written is ``{"ready": true}``. The parent bounds every request with its own time budget and
kills this process when it overruns, so math-verify's signal-based timeouts are switched off.
Run as ``python -m dualcurate_verify._worker``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed|\\fbox")


def _has_expr(parsed: list[Any]) -> bool:
    return any(not isinstance(p, str) for p in parsed)


def _extracted_text(parsed: list[Any]) -> str | None:
    texts = [p for p in parsed if isinstance(p, str)]
    if texts:
        return texts[-1]
    return str(parsed[0]) if parsed else None


def _parse_answer(text: str) -> list[Any]:
    """Parse an answer: short math is wrapped as LaTeX (``x+1`` -> ``$x+1$``); delimited text,
    words and prose go through math-verify's extraction as they are (wrapped words would
    become products of symbols)."""
    from math_verify import parse

    from dualcurate_verify.normalise import looks_textual

    if _DELIMITED.search(text) or looks_textual(text):
        return parse(text, parsing_timeout=None)  # math-verify's own extraction
    parsed = parse(f"${text}$", parsing_timeout=None)
    if not _has_expr(parsed):
        parsed = parse(text, parsing_timeout=None)
    return parsed


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Answer one request (also importable for in-process tests of the protocol)."""
    from math_verify import parse, verify

    op = request.get("op")
    if op == "ping":
        return {"ok": True}
    if op == "sleep":  # diagnostic: lets tests provoke a timeout deterministically
        time.sleep(float(request.get("seconds", 0)))
        return {"ok": True}
    if op == "extract":
        parsed = parse(request["response"], parsing_timeout=None)
        return {"ok": True, "answer": _extracted_text(parsed), "parsed": _has_expr(parsed)}
    if op in ("verify", "verify_text"):
        gold = _parse_answer(request["gold"])
        if op == "verify":
            target = _parse_answer(request["answer"])
        else:  # math-verify's own extraction over free text
            target = parse(request["answer"], parsing_timeout=None)
        equal = bool(gold) and bool(target) and verify(gold, target, timeout_seconds=None,
                                                       strict=bool(request.get("strict", True)))
        return {"ok": True, "equal": equal, "gold_parsed": _has_expr(gold),
                "answer_parsed": _has_expr(target), "answer": _extracted_text(target)}
    return {"ok": False, "error": f"unknown op {op!r}"}


def main() -> None:
    logging.disable(logging.WARNING)  # math-verify warns that its timeouts are off: we know
    import math_verify  # noqa: F401 - pay the import before reporting ready

    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as exc:  # a sympy crash must not kill the worker
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        out.write(json.dumps(reply, default=str) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
