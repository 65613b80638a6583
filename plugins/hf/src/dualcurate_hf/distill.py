"""The hf-distill distiller (under construction)."""

from __future__ import annotations

from dualcurate import Distiller


class HFDistiller(Distiller):
    """Placeholder until issue 3 lands."""

    name = "hf-distill"
