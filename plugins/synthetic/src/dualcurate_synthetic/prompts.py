"""Prompt and completion formats the demo's base model is pre-trained with. They must match
what the trainer and the Dual Tuning judge use, so the trl plugin's formats are used when it
is installed; these fallbacks spell out the same formats."""

from __future__ import annotations

from typing import Any

MODE_INSTRUCTIONS = {
    "short": "Answer directly.",
    "long": "Think step by step.",
}


def prompt_messages(caption: str, question: str, mode: str) -> list[dict[str, Any]]:
    """The user turn: the caption (the text student reads it instead of the pixels), the
    question and the instruction selecting the answer mode."""
    text = f"{caption}\n{question}\n{MODE_INSTRUCTIONS[mode]}" if caption else \
        f"{question}\n{MODE_INSTRUCTIONS[mode]}"
    return [{"role": "user", "content": text}]


def completion_text(reasoning: str, answer: str, mode: str) -> str:
    """``<think>…</think>\\n<answer>X</answer>`` (long) or ``<answer>X</answer>`` (short)."""
    try:
        from dualcurate_trl.data import long_completion, short_completion
    except ImportError:
        long_completion = None
    if long_completion is not None:
        return long_completion(reasoning, answer) if mode == "long" else short_completion(answer)
    if mode == "long":
        return f"<think>{reasoning}</think>\n<answer>{answer}</answer>"
    return f"<answer>{answer}</answer>"
