"""Hook implementations (thin): each entry point is one plugin object."""

from __future__ import annotations


class _Placeholder:
    """Registers nothing yet (stage under construction)."""


sft = _Placeholder()

grpo = _Placeholder()

gspo = _Placeholder()
