"""Hook implementations (thin): each entry point is one plugin object."""

from __future__ import annotations


class _Placeholder:
    """Registers nothing yet (stage under construction)."""


difficulty = _Placeholder()
