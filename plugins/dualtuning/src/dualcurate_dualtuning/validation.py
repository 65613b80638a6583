"""Validation mode (the paper's check that the regions mean something): retrain from the base
on (a) the curated mix, (b) everything, (c) the detrimental groups only, and compare each with
the base on every group's held-out split.

Per model and group: accuracy in both modes, the better of the two, and ``delta`` = that minus
the base's better mode (B*), in points. ``mean_delta`` averages ``delta`` over groups. If the
regions are right, curated ≥ everything > detrimental-only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dualcurate_dualtuning.data import LONG, SHORT, GroupSplit
from dualcurate_dualtuning.evaluate import ModelScores
from dualcurate_dualtuning.metrics import DETRIMENTAL, DIRECT, REASONING, GroupMetrics
from dualcurate_dualtuning.training import NoTrainingExamples

Train = Callable[[str, dict[str, str]], Path]
Evaluate = Callable[[str], ModelScores]


def validation_sets(metrics: list[GroupMetrics],
                    everything_mode: str) -> dict[str, dict[str, str]]:
    """Which groups each validation model trains on, and in which mode."""
    curated = {m.group: LONG for m in metrics if m.region == REASONING}
    curated.update({m.group: SHORT for m in metrics if m.region == DIRECT})
    return {
        "curated": curated,
        "everything": {m.group: everything_mode for m in metrics},
        "detrimental_only": {m.group: everything_mode for m in metrics
                             if m.region == DETRIMENTAL},
    }


def compare(scores: ModelScores, base: ModelScores, groups: list[str]) -> dict[str, Any]:
    """One model against the base, per group and on average."""
    rows = []
    for group in groups:
        s, l_ = scores.accuracy[group]["S"], scores.accuracy[group]["L"]
        base_best = max(base.accuracy[group]["S"], base.accuracy[group]["L"])
        rows.append({"group": group, "S": s, "L": l_, "best": max(s, l_),
                     "base_best": base_best, "delta": max(s, l_) - base_best})
    mean = sum(r["delta"] for r in rows) / len(rows) if rows else 0.0
    return {"groups": rows, "mean_delta": mean}


def validate(splits: list[GroupSplit], metrics: list[GroupMetrics], base: ModelScores,
             train: Train, evaluate: Evaluate, everything_mode: str) -> dict[str, Any]:
    """Train and evaluate the three validation models; a set with no groups (or no examples)
    is reported as skipped with the reason."""
    groups = [s.group for s in splits]
    out: dict[str, Any] = {"base": compare(base, base, groups), "everything_mode":
                           everything_mode, "models": {}}
    for name, modes in validation_sets(metrics, everything_mode).items():
        if not modes:
            out["models"][name] = {"skipped": f"no {name.replace('_only', '')} groups"}
            continue
        try:
            model_dir = train(f"validate-{name}", modes)
        except NoTrainingExamples as exc:
            out["models"][name] = {"skipped": str(exc)}
            continue
        result = compare(evaluate(str(model_dir)), base, groups)
        out["models"][name] = {"model": str(model_dir), "trained_on": modes, **result}
    return out
