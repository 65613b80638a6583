"""The hf-dataset source (under construction)."""

from __future__ import annotations

from dualcurate import Source, StageConfig


class HFDatasetSource(Source):
    """Placeholder until issue 9 lands."""

    name = "hf-dataset"
    Config = StageConfig
