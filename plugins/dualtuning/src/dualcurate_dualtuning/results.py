"""The Dual Tuning judge's results as a run stores them, read back: the columns it adds (and
their Arrow types), the colour of each region, and the per-group table of any run::

    from dualcurate_dualtuning.results import efficacy_groups
    for g in efficacy_groups("runs/demo"):
        print(g["group"], g["region"], g["Gain_DA"], g["Gain_CoT"])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from dualcurate.report_sections import RunView
from dualcurate_dualtuning.metrics import DETRIMENTAL, DIRECT, REASONING

#: the judge's columns (its ``column_types``): each curated row's mode and its group's region
COLUMN_TYPES: dict[str, pa.DataType] = {"mode": pa.string(), "efficacy_region": pa.string()}

#: one colour per region: the scatter plot, the table's badges, the sample browser
REGION_COLOURS: dict[str, str] = {REASONING: "#3b6fd8", DIRECT: "#2e9d4f",
                                  DETRIMENTAL: "#d2453c"}

EFFICACY_FILE = "efficacy.json"


def efficacy_groups(run_dir: str | Path | RunView) -> list[dict[str, Any]]:
    """The Dual Tuning table of a run (one dict per group: B_S, B_L, DT_S, DT_L, Gain_DA,
    Gain_CoT, GAP_B, GAP_DT, region, n_train, n_eval); empty when no efficacy judge has
    results."""
    run = run_dir if isinstance(run_dir, RunView) else RunView(run_dir)
    return efficacy_results(run)[0]


def efficacy_results(run: RunView) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """(groups, the whole results object, where they were read) of the run's efficacy judge:
    its ``efficacy.json`` artifact, else the report in its manifest record; ``([], {},
    None)`` when it has none (yet)."""
    for rec in run.stages_of_kind("efficacy_judge"):
        path = run.artifact(rec["name"], EFFICACY_FILE)
        if path is not None:
            try:
                doc = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                doc = None  # a report never fails on a damaged artifact: try the manifest
            if isinstance(doc, dict):
                return list(doc.get("groups") or []), doc, str(path)
        report = rec.get("report") or {}
        if isinstance(report.get("groups"), list):
            return list(report["groups"]), report, f"manifest.json ({rec['name']} report)"
    return [], {}, None
