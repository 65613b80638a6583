"""dualcurate-verify: rule-based answer verification and a CompassVerifier-style LLM judge.

Library use::

    from dualcurate_verify import check, extract_answer
    check("42", "<think>...</think><answer>42</answer>").verdict   # "correct"
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dualcurate_verify.extract import extract_answer, split_think
    from dualcurate_verify.judge import CompassJudge
    from dualcurate_verify.rules import CheckResult, check
    from dualcurate_verify.stage import RuleVerifier

__all__ = ["CheckResult", "CompassJudge", "RuleVerifier", "check", "extract_answer",
           "split_think"]

# Every name is imported when first asked for: the math-verify worker (``python -m
# dualcurate_verify._worker``) imports this package and needs none of them, and the rules read
# the trace format from the dualcurate core, which the worker should not pay for at each start.
_HOME = {"CheckResult": "rules", "check": "rules", "extract_answer": "extract",
         "split_think": "extract", "RuleVerifier": "stage", "CompassJudge": "judge"}


def __getattr__(name: str) -> object:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'dualcurate_verify' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dualcurate_verify.{module}"), name)
