"""Hook implementations (thin): each entry point is one plugin object."""

from __future__ import annotations


class _Placeholder:
    """Registers nothing yet (stage under construction)."""


hf_dataset = _Placeholder()

hf_engine = _Placeholder()

hf_distill = _Placeholder()
