"""Prompt and completion formats the demo's base model is pre-trained with. They must be the
ones the Dual Tuning judge evaluates with and the trainers train on, so all three render them
through :mod:`dualcurate.formats` (user text ``"{mode prefix}\\n\\n{question}"``, completions
``<think>…</think>\\n<answer>X</answer>`` or ``<answer>X</answer>``)."""

from __future__ import annotations

from typing import Any

from dualcurate.formats import MODE_PREFIXES, render_answer, render_mode_prompt, render_trace

#: The mode prefixes (Dual Tuning's defaults), by mode.
MODE_INSTRUCTIONS = MODE_PREFIXES


def prompt_messages(question: str, mode: str) -> list[dict[str, Any]]:
    """The prompt of a text-only student for ``question`` in ``mode`` ("short"/"long"): Dual
    Tuning's default mode prompt (no system message)."""
    return [{"role": "user", "content": render_mode_prompt(question, MODE_PREFIXES[mode])}]


def completion_text(reasoning: str, answer: str, mode: str) -> str:
    """``<think>…</think>\\n<answer>X</answer>`` (long) or ``<answer>X</answer>`` (short)."""
    return render_trace(reasoning, answer) if mode == "long" else render_answer(answer)
