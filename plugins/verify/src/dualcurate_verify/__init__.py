"""dualcurate-verify: rule-based answer verification and a CompassVerifier-style LLM judge.

Library use::

    from dualcurate_verify import check, extract_answer
    check("42", "<think>...</think><answer>42</answer>").verdict   # "correct"
"""

from __future__ import annotations

from dualcurate_verify.extract import extract_answer, split_think
from dualcurate_verify.rules import CheckResult, check

__all__ = ["CheckResult", "CompassJudge", "RuleVerifier", "check", "extract_answer",
           "split_think"]


def __getattr__(name: str) -> object:
    # the stage classes pull in the dualcurate core: import them only when asked for
    if name == "RuleVerifier":
        from dualcurate_verify.stage import RuleVerifier

        return RuleVerifier
    if name == "CompassJudge":
        from dualcurate_verify.judge import CompassJudge

        return CompassJudge
    raise AttributeError(f"module 'dualcurate_verify' has no attribute {name!r}")
