"""Rollout prompts, parsing and verification for the difficulty filter.

A prompt is the sample's images (as ``{"type": "image", "image": sha256}`` parts) followed by
the row rendered through a Jinja template, as the teacher's (:mod:`dualcurate.formats`). A
rollout becomes a trace as the teacher's do (:func:`dualcurate.formats.make_trace`) and is
verified by registered verifier stages, by
name: the recipe's verifier (``rule-verify`` when the recipe has none), answer rules only, then
the ``verifier_stage`` cascade (each later stage sees only what is still undecided).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dualcurate.context import DEFAULT_VERIFIER
from dualcurate.errors import DualcurateError
from dualcurate.formats import FORMAT_INSTRUCTION, make_trace, render_template, user_messages

if TYPE_CHECKING:
    import jinja2

    from dualcurate import Completion, StageContext, Verifier
    from dualcurate.plugins import PluginHost
    from dualcurate.recipe import VerifierRef

#: The prompt when ``template`` is unset: the caption (with ``include_caption``), the question
#: and the trace format's instruction.
DEFAULT_TEMPLATE = ("{% if caption %}Image description: {{ caption }}\n\n{% endif %}"
                    "{{ question }}\n\n" + FORMAT_INSTRUCTION)

CheckFn = Callable[..., Any]


def build_messages(row: dict[str, Any], template: jinja2.Template, system_prompt: str = "",
                   include_caption: bool = False,
                   include_images: bool = True) -> list[dict[str, Any]]:
    """The chat messages of one sample's rollout request (the teacher's rendering)."""
    text = render_template(template, row, include_caption)
    return user_messages(text, (row.get("images") or []) if include_images else [],
                         system_prompt)


def rollout_trace(completion: Completion, sample_index: int, model: str,
                  engine: str) -> dict[str, Any]:
    """A completion as a trace (:func:`dualcurate.formats.make_trace`, as the teacher's), a
    failed one marked invalid."""
    trace = make_trace(completion, sample_index, model, engine)
    if trace["error"] is not None:
        trace.update(verdict="invalid", method="error", reason="generation failed")
    return trace


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
