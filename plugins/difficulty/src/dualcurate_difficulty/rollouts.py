"""Rollout prompts, parsing and verification for the difficulty filter.

A prompt is the sample's images (as ``{"type": "image", "image": sha256}`` parts) followed by
the question rendered through a template; the caption is added when asked for. A rollout is
parsed into a :class:`dualcurate.Trace` dict and verified by registered verifier stages, by
name: the recipe's verifier (``rule-verify`` when the recipe has none), answer rules only, then
the ``verifier_stage`` cascade (each later stage sees only what is still undecided).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dualcurate import Completion, Trace
from dualcurate.context import DEFAULT_VERIFIER
from dualcurate.errors import DualcurateError
from dualcurate.formats import FORMAT_INSTRUCTION, last_answer, split_think, split_trace

if TYPE_CHECKING:
    from dualcurate import StageContext, Verifier
    from dualcurate.config import VerifierRef
    from dualcurate.plugins import PluginHost

TEMPLATE_FIELDS = ("question", "caption", "choices")
DEFAULT_TEMPLATE = "{question}\n\n" + FORMAT_INSTRUCTION

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")

CheckFn = Callable[..., Any]


def template_problems(template: str) -> list[str]:
    """What is wrong with a prompt template (unknown or indexed fields, bad braces)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"prompt_template: {exc}; write literal braces as {{{{ and }}}}"]
    problems = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS:
            problems.append(f"prompt_template: field {{{field}}} is not one of "
                            f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
    return problems


def build_messages(row: dict[str, Any], template: str = DEFAULT_TEMPLATE,
                   system_prompt: str = "", include_caption: bool = False,
                   include_images: bool = True) -> list[dict[str, Any]]:
    """The chat messages of one sample's rollout request."""
    choices = row.get("choices") or []
    text = template.format(
        question=row.get("question", ""),
        caption=row.get("caption") or "",
        choices="\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices)),
    )
    caption = row.get("caption") or ""
    if include_caption and caption and "{caption}" not in template:
        text = f"Image description: {caption}\n\n{text}"
    content: list[dict[str, Any]] = []
    if include_images:
        content.extend({"type": "image", "image": h} for h in row.get("images") or [])
    content.append({"type": "text", "text": text})
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": content})
    return messages


def extract_answer(text: str) -> str:
    """The final answer of a response: the last ``<answer>`` block after the think block (as
    :mod:`dualcurate.formats` splits it), else the last ``\\boxed{}``, else the last non-empty
    line after the think block; ``""`` when the think block never closes."""
    _, after = split_think(text)
    if after is None:
        return ""
    found = last_answer(after)
    if found is not None:
        return found.strip()
    boxed = _BOXED.findall(after)
    if boxed:
        return boxed[-1].strip()
    lines = [line.strip() for line in after.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse_rollout(completion: Completion, sample_index: int, model: str,
                  engine: str) -> dict[str, Any]:
    """A completion as a Trace dict (verdict not yet set)."""
    if not completion.ok:
        return Trace(error=completion.error, sample_index=sample_index, model=model,
                     engine=engine, verdict="invalid", method="error",
                     reason="generation failed").model_dump()
    reasoning, _ = split_trace(completion.text)
    return Trace(
        text=completion.text,
        reasoning=reasoning,
        answer=extract_answer(completion.text),
        finish_reason=completion.finish_reason,
        truncated=completion.finish_reason == "length",
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        model=model,
        engine=engine,
        sample_index=sample_index,
    ).model_dump()




def verifier_problems(host: PluginHost) -> list[str]:
    """Why the default verifier cannot be made (not registered, no entry point)."""
    try:
        host.get("verifier", DEFAULT_VERIFIER)  # loads its plugin on first need
        return []
    except DualcurateError:
        pass
    return [f"the default verifier {DEFAULT_VERIFIER!r} is not installed; pip install "
            f"dualcurate-verify, or set use_check = false and name registered verifiers in "
            f"verifier_stage"]


def make_verifier(ctx: StageContext, ref: VerifierRef, answer_only: bool = False) -> Verifier:
    """The verifier stage a reference names (resolved against the context's plugin host,
    its plugin's entry point loaded on first need), set up. ``answer_only``: a verifier that
    has structure rules skips them (rollouts are scored on their answers, as ``check``
    does)."""
    stage = ctx.resolve(ref)(ref.options)
    if answer_only and hasattr(stage, "answer_only"):
        stage.answer_only = True
    stage.setup(ctx)
    return stage  # type: ignore[return-value]


class RolloutVerifier:
    """Gives every rollout a verdict: ``check`` first (if any: a callable a test or library
    user sets), then each verifier stage in turn on the rollouts still ``undecided`` (or never
    verified)."""

    def __init__(self, check: CheckFn | None, stages: Sequence[Verifier] = ()):
        self.check = check
        self.stages = list(stages)

    def verify(self, items: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]],
               ctx: StageContext) -> None:
        """``items``: (sample row, its new rollouts); verdicts are written into the rollouts."""
        if self.check is not None:
            for row, rollouts in items:
                for trace in rollouts:
                    if trace["error"] is None:
                        self._apply_check(row, trace)
        for stage in self.stages:
            todo = [(row, [t for t in rollouts if t["error"] is None
                           and t["verdict"] in (None, "undecided")])
                    for row, rollouts in items]
            todo = [(row, traces) for row, traces in todo if traces]
            if not todo:
                break
            rows_in = [{**row, "traces": [dict(t) for t in traces]} for row, traces in todo]
            rows_out = stage.process(rows_in, ctx)
            for (_, traces), out in zip(todo, rows_out, strict=True):
                for trace, judged in zip(traces, out.get("traces") or [], strict=False):
                    for key in ("verdict", "method", "label", "reason"):
                        if judged.get(key) is not None:
                            trace[key] = judged[key]
        for _, rollouts in items:
            for trace in rollouts:
                if trace["verdict"] is None:
                    trace["verdict"] = "undecided"

    def _apply_check(self, row: dict[str, Any], trace: dict[str, Any]) -> None:
        assert self.check is not None
        result = self.check(row.get("answer", ""), trace["text"], question=row.get("question"))
        verdict = getattr(result, "verdict", result)
        trace["verdict"] = str(verdict)
        trace["method"] = _text_or_none(getattr(result, "method", None)) or "check"
        trace["reason"] = _text_or_none(getattr(result, "reason", None))
        trace["label"] = _text_or_none(getattr(result, "label", None))
        answer = getattr(result, "answer", None)
        if answer is not None:  # the verifier's own extraction wins over ours
            trace["answer"] = str(answer)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
