"""What this distribution's columns add to the training-tool exports (hook
``dualcurate_export_extras``). The difficulty filter's: the subsets ``hard`` (pass rate 0)
and ``nontrivial`` (pass rate < 1, or an incorrect rollout seen before adaptive sampling
stopped), and verl's ``extra_info.pass_rate``. The rl-subset carve-out's: the subsets ``rl``
(its ``keep = false`` rows, read whatever ``--all-rows`` says) and ``sft``, and its
``rl`` / ``sft`` as verl's ``extra_info.split``."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from dualcurate.export_extras import ExportField, ExportSubset

HINT = "run the difficulty filter"
RL_HINT = "run the rl-subset filter"


def hard(row: dict[str, Any]) -> bool:
    """No rollout was correct (the pass rate is known when every rollout was drawn)."""
    rate = row.get("pass_rate")
    return rate is not None and float(rate) == 0


def nontrivial(row: dict[str, Any]) -> bool:
    """Some rollout was incorrect: a pass rate below 1, or, where adaptive sampling stopped
    early (no pass rate), an incorrect rollout among those drawn."""
    rate = row.get("pass_rate")
    if rate is not None:
        return float(rate) < 1
    drawn, correct = row.get("pass_drawn"), row.get("pass_correct")
    return drawn is not None and correct is not None and correct < drawn


def pass_rate(row: dict[str, Any]) -> float | None:
    rate = row.get("pass_rate")
    return None if rate is None else float(rate)


def rl_split(row: dict[str, Any]) -> str | None:
    return row.get("rl_split") or None


def rl_subset_extras() -> list[ExportSubset | ExportField]:
    return [ExportSubset("rl", "the rl-subset carve-out's RL rows", column="rl_split",
                         hint=RL_HINT, keep=lambda row: row.get("rl_split") == "rl",
                         all_rows=True),
            ExportSubset("sft", "the rows the rl-subset carve-out left for SFT",
                         column="rl_split", hint=RL_HINT,
                         keep=lambda row: row.get("rl_split") == "sft"),
            ExportField("split", pa.string(), rl_split, refines=True)]


def export_extras() -> list[ExportSubset | ExportField]:
    return [ExportSubset("hard", "pass rate 0", column="pass_rate", hint=HINT, keep=hard),
            ExportSubset("nontrivial", "pass rate < 1", column="pass_rate", hint=HINT,
                         keep=nontrivial),
            ExportField("pass_rate", pa.float64(), pass_rate)]
