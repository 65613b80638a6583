"""dualcurate-dualtuning: the Dual Tuning efficacy judge (``dual-tuning``) and
``curate efficacy-table``."""

from dualcurate_dualtuning.metrics import REGIONS, GroupMetrics, group_metrics, region_of

__all__ = ["REGIONS", "GroupMetrics", "group_metrics", "region_of"]
