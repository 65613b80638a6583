"""GRPO/GSPO rewards: accuracy from the verifier plugin and a format reward.

The default reward (OpenMMReasoner) is ``0.9·accuracy + 0.1·format``. TRL gets the two as
separate reward functions with ``reward_weights=[0.9, 0.1]``, so it logs each one
(``rewards/accuracy/mean``, ``rewards/format/mean``) and the weighted sum (``reward``).

* accuracy: 1.0 when the verifier says ``"correct"``, else 0.0 (an invalid or unparseable
  response counts as incorrect). The verifier is a registered verifier stage, by name: the
  recipe's (``rule-verify`` by default, ``compass-judge``'s cascade when the recipe's verify
  stage uses it), answer rules only, one batch per reward call;
* format: 1.0 for ``<think>…</think>…<answer>…</answer>`` or a ``\\boxed{…}``, else 0.0.
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from dualcurate.context import DEFAULT_VERIFIER, recipe_verifier
from dualcurate.formats import is_long_form

if TYPE_CHECKING:
    from dualcurate import StageContext

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
    return 1.0 if is_long_form(text) or BOXED_RE.search(text) else 0.0




class VerifierCheck:
    """``check(gold, response, question=None, *, answer_type=None, choices=None)`` backed by a
    registered verifier stage (``ctx.make_stage("verifier", name, options)``), answer rules
    only. ``name=None``: the recipe's verifier (see :func:`recipe_verifier`). Without a
    context, an ephemeral one is made on first use (its request cache holds judge calls)."""

    def __init__(self, name: str | None = None, options: dict[str, Any] | None = None,
                 ctx: StageContext | None = None):
        if name is None:
            name, recipe_options = recipe_verifier(ctx)
            options = {**recipe_options, **(options or {})}
        self.name = name
        self.options = dict(options or {})
        self._ctx = ctx
        self._stage: Any = None
        self._lock = threading.Lock()

    def stage(self) -> Any:
        """The verifier stage, made and set up on first use."""
        with self._lock:
            if self._stage is None:
                if self._ctx is None:
                    from dualcurate import StageContext

                    self._ctx = StageContext.ephemeral("reward")
                ctx = self._ctx
                if ctx.host is None:
                    from dualcurate.plugins import PluginHost

                    ctx.host = PluginHost()
                stage = ctx.make_stage("verifier", self.name, self.options)
                if hasattr(stage, "answer_only"):
                    stage.answer_only = True  # rewards score answers, not trace structure
                stage.setup(ctx)
                self._stage = stage
            return self._stage

    def verdicts(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One verdict dict (``verdict``, ``method``, ``label``, ``reason``) per item
        (``gold``, ``response``, optional ``question``, ``answer_type``, ``choices``), in one
        call of the stage."""
        if not items:
            return []
        stage = self.stage()
        rows = [{"id": str(i), "answer": str(item["gold"]),
                 "question": item.get("question") or "",
                 "answer_type": item.get("answer_type"),
                 "choices": list(item.get("choices") or []),
                 "traces": [{"text": item["response"]}]} for i, item in enumerate(items)]
        assert self._ctx is not None
        out = stage.process(rows, self._ctx)
        return [dict((row.get("traces") or [{}])[0]) for row in out]

    def __call__(self, gold: str, response: str, question: str | None = None, *,
                 answer_type: str | None = None, choices: list[str] | None = None) -> Any:
        trace = self.verdicts([{"gold": gold, "response": response, "question": question,
                                "answer_type": answer_type, "choices": choices}])[0]
        return SimpleNamespace(**{k: trace.get(k) for k in ("verdict", "method", "label",
                                                            "reason", "answer")})

    def close(self) -> None:
        if self._stage is not None:
            self._stage.teardown()
            self._stage = None


@functools.cache
def default_check() -> VerifierCheck:
    """The default verifier of the accuracy reward: ``rule-verify`` through the registry, one
    per process (its stage and ephemeral context are made on first use)."""
    return VerifierCheck(DEFAULT_VERIFIER)


class AccuracyReward:
    """TRL reward function: 1.0 per completion the verifier judges correct against the row's
    gold ``answer`` (and ``question`` when the dataset has one)."""

    def __init__(self, check: CheckFn | None = None, *, verifier: str | None = None,
                 verifier_options: dict[str, Any] | None = None,
                 ctx: StageContext | None = None):
        self.__name__ = "accuracy"  # TRL names the logged metric after it
        self._check = check
        if check is None and (verifier is not None or verifier_options or ctx is not None):
            # a named verifier, or the recipe's (through the context's run manifest)
            self._check = VerifierCheck(verifier, verifier_options, ctx)

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
        if isinstance(self.check, VerifierCheck):  # one batch through the verifier stage
            traces = self.check.verdicts([
                {"gold": str(gold), "response": completion_text(c), "question": q,
                 "answer_type": t, "choices": list(o) if o else None}
                for c, gold, q, t, o in zip(completions, answer, questions, types, options,
                                            strict=True)])
            return [1.0 if t.get("verdict") == "correct" else 0.0 for t in traces]
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
                     check: CheckFn | None = None, *, verifier: str | None = None,
                     verifier_options: dict[str, Any] | None = None,
                     ctx: StageContext | None = None) -> tuple[list[Any], list[float]]:
    """The reward functions and weights to hand TRL (a zero-weight one is left out). The
    accuracy reward uses ``check`` when given, else the verifier stage ``verifier`` (with
    ``verifier_options``), else the recipe's verifier when ``ctx`` is given, else
    ``rule-verify``."""
    funcs: list[Any] = []
    weights: list[float] = []
    if accuracy_weight:
        funcs.append(AccuracyReward(check, verifier=verifier, verifier_options=verifier_options,
                                    ctx=ctx))
        weights.append(accuracy_weight)
    if format_weight:
        funcs.append(FormatReward())
        weights.append(format_weight)
    if not funcs:
        raise ValueError("accuracy_weight and format_weight are both 0: set at least one")
    return funcs, weights
