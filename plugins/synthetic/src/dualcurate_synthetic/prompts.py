"""Prompt and completion formats the demo's base model is pre-trained with. They must be the
ones the Dual Tuning judge evaluates with and the trainers train on, so the dual-tuning and trl
plugins' own builders are used when installed; the fallbacks spell out the same formats
(user text ``"{mode prefix}\\n\\n{question}"``, completions ``<think>…</think>\\n<answer>X</answer>``
or ``<answer>X</answer>``)."""

from __future__ import annotations

from typing import Any

MODE_INSTRUCTIONS = {
    "short": "Answer directly.",
    "long": "Think step by step.",
}


def prompt_messages(question: str, mode: str) -> list[dict[str, Any]]:
    """The prompt of a text-only student for ``question`` in ``mode`` ("short"/"long")."""
    try:
        from dualcurate_dualtuning.data import ModePrompts
    except ImportError:
        return [{"role": "user", "content": f"{MODE_INSTRUCTIONS[mode]}\n\n{question}"}]
    messages = ModePrompts().messages({"question": question}, mode)  # type: ignore[arg-type]
    return [{"role": m["role"], "content": "".join(p.get("text") or "" for p in m["content"])}
            for m in messages]


def completion_text(reasoning: str, answer: str, mode: str) -> str:
    """``<think>…</think>\\n<answer>X</answer>`` (long) or ``<answer>X</answer>`` (short)."""
    try:
        from dualcurate_trl.data import long_completion, short_completion
    except ImportError:
        if mode == "long":
            return f"<think>{reasoning}</think>\n<answer>{answer}</answer>"
        return f"<answer>{answer}</answer>"
    return long_completion(reasoning, answer) if mode == "long" else short_completion(answer)
