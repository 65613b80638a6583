"""The hf engine (under construction)."""

from __future__ import annotations

from dualcurate import Engine


class HFEngine(Engine):
    """Placeholder until issue 3 lands."""

    name = "hf"
