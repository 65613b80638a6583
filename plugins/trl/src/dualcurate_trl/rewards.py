"""GRPO/GSPO rewards: accuracy from the verifier plugin and a format reward.

The default reward (OpenMMReasoner) is ``0.9·accuracy + 0.1·format``. TRL gets the two as
separate reward functions with ``reward_weights=[0.9, 0.1]``, so it logs each one
(``rewards/accuracy/mean``, ``rewards/format/mean``) and the weighted sum (``reward``).

* accuracy: 1.0 when ``dualcurate_verify.check(gold, response, question=...)`` says
  ``"correct"``, else 0.0 (an invalid or unparseable response counts as incorrect);
* format: 1.0 for ``<think>…</think>…<answer>…</answer>`` or a ``\\boxed{…}``, else 0.0.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

THINK_ANSWER_RE = re.compile(r"<think>.*?</think>.*?<answer>.*?</answer>", re.DOTALL)
BOXED_RE = re.compile(r"\\boxed\{.*\}", re.DOTALL)

CheckFn = Callable[..., Any]


def completion_text(completion: Any) -> str:
    """The assistant's text from a TRL completion (a string, or a list of messages whose
    content is a string or a list of parts)."""
    if isinstance(completion, str):
        return completion
    texts = []
    for message in completion or []:
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p.get("text") or "" for p in content
                         if isinstance(p, dict) and p.get("type") == "text")
    return "".join(texts)


def format_score(text: str) -> float:
    """1.0 when the response has the think/answer structure or a ``\\boxed{}``, else 0.0."""
    return 1.0 if THINK_ANSWER_RE.search(text) or BOXED_RE.search(text) else 0.0


def default_check() -> CheckFn:
    """``dualcurate_verify.check``, imported when first needed."""
    try:
        from dualcurate_verify import check
    except ImportError as exc:
        raise ImportError("the accuracy reward needs dualcurate-verify (dualcurate_verify.check); "
                          "install it: pip install dualcurate-verify") from exc
    return check


class AccuracyReward:
    """TRL reward function: 1.0 per completion the verifier judges correct against the row's
    gold ``answer`` (and ``question`` when the dataset has one)."""

    def __init__(self, check: CheckFn | None = None):
        self.__name__ = "accuracy"  # TRL names the logged metric after it
        self._check = check

    @property
    def check(self) -> CheckFn:
        if self._check is None:
            self._check = default_check()
        return self._check

    def _accepts(self, name: str) -> bool:
        try:
            params = inspect.signature(self.check).parameters
        except (TypeError, ValueError):
            return False
        return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

    def score(self, gold: str, response: str, question: str | None = None,
              **hints: Any) -> float:
        """1.0 if the verifier's verdict is ``"correct"``, else 0.0. ``hints`` (the row's
        ``answer_type``, ``choices``) go to the check when it takes them and they are set."""
        extra = {k: v for k, v in hints.items() if v and self._accepts(k)}
        result = self.check(gold, response, question=question, **extra)
        return 1.0 if getattr(result, "verdict", None) == "correct" else 0.0

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 answer: Sequence[str] | None = None, question: Sequence[str | None] | None = None,
                 answer_type: Sequence[str | None] | None = None,
                 choices: Sequence[list[str] | None] | None = None, **_: Any) -> list[float]:
        if answer is None:
            raise ValueError("accuracy reward: the training rows have no 'answer' column; give "
                             "each row its gold answer")
        n = len(completions)
        questions = question if question is not None else [None] * n
        types = answer_type if answer_type is not None else [None] * n
        options = choices if choices is not None else [None] * n
        return [self.score(str(gold), completion_text(c), q, answer_type=t,
                           choices=list(o) if o else None)
                for c, gold, q, t, o in zip(completions, answer, questions, types, options,
                                            strict=True)]


class FormatReward:
    """TRL reward function: :func:`format_score` of each completion."""

    def __init__(self) -> None:
        self.__name__ = "format"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 **_: Any) -> list[float]:
        return [format_score(completion_text(c)) for c in completions]


def combined_reward(gold: str, response: str, question: str | None = None, *,
                    accuracy_weight: float = 0.9, format_weight: float = 0.1,
                    check: CheckFn | None = None) -> float:
    """The scalar reward of one response: ``accuracy_weight·accuracy + format_weight·format``
    (what TRL computes from the two reward functions and their weights)."""
    accuracy = AccuracyReward(check).score(gold, response, question)
    return accuracy_weight * accuracy + format_weight * format_score(response)


def reward_functions(accuracy_weight: float, format_weight: float,
                     check: CheckFn | None = None) -> tuple[list[Any], list[float]]:
    """The reward functions and weights to hand TRL (a zero-weight one is left out)."""
    funcs: list[Any] = []
    weights: list[float] = []
    if accuracy_weight:
        funcs.append(AccuracyReward(check))
        weights.append(accuracy_weight)
    if format_weight:
        funcs.append(FormatReward())
        weights.append(format_weight)
    if not funcs:
        raise ValueError("accuracy_weight and format_weight are both 0: set at least one")
    return funcs, weights
