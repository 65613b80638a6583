"""Dual Tuning metrics and regions: pure functions, no model, no I/O.

Per task group, from four accuracies (any scale, the same for all four: percent, fraction,
counts of the same eval set):

* ``B_S`` / ``B_L``: the base model answering directly / with reasoning;
* ``DT_S`` / ``DT_L``: the dual-tuned model (trained once on S ∪ L) in each mode.

``B* = max(B_S, B_L)``; ``Gain_DA = 100·(DT_S − B*)/B*``; ``Gain_CoT = 100·(DT_L − B*)/B*``;
``GAP_B = B_L − B_S``; ``GAP_DT = DT_L − DT_S``.

Regions (every input lands in exactly one):

* ``reasoning-benefit``: ``Gain_CoT > 0`` and ``Gain_CoT > Gain_DA``;
* ``direct-benefit``: ``Gain_DA > 0`` and ``Gain_DA ≥ Gain_CoT`` (a tie goes to direct: it
  reaches the same accuracy with fewer tokens);
* ``detrimental``: everything else, i.e. ``max(Gain_DA, Gain_CoT) ≤ 0``. That is the paper's
  "both < 0" plus the boundary where the better mode only matches the base (a gain of exactly
  0): training on that data bought nothing, so the curated mix drops it.

``B* = 0`` (the base never answers correctly): a relative gain is undefined, so both gains fall
back to absolute points, ``Gain = DT − B* = DT``, and ``gain_basis`` says ``"absolute"``. The
region rules above are unchanged; since scores are non-negative, such a group is
detrimental only when the dual model scores 0 in both modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Region = Literal["reasoning-benefit", "direct-benefit", "detrimental"]
REASONING: Region = "reasoning-benefit"
DIRECT: Region = "direct-benefit"
DETRIMENTAL: Region = "detrimental"
REGIONS: tuple[Region, ...] = (REASONING, DIRECT, DETRIMENTAL)
SCORE_NAMES = ("B_S", "B_L", "DT_S", "DT_L")


def region_of(gain_da: float, gain_cot: float) -> Region:
    """The region of a (Gain_DA, Gain_CoT) point; total and exclusive over finite floats."""
    for name, value in (("Gain_DA", gain_da), ("Gain_CoT", gain_cot)):
        if not math.isfinite(value):
            raise ValueError(f"{name}={value!r}: gains must be finite numbers")
    if gain_cot > 0 and gain_cot > gain_da:
        return REASONING
    if gain_da > 0 and gain_da >= gain_cot:
        return DIRECT
    return DETRIMENTAL


@dataclass(frozen=True)
class GroupMetrics:
    """The four scores of one group and everything derived from them."""

    group: str
    B_S: float
    B_L: float
    DT_S: float
    DT_L: float
    B_star: float
    Gain_DA: float
    Gain_CoT: float
    GAP_B: float
    GAP_DT: float
    region: Region
    gain_basis: Literal["relative", "absolute"]

    def table_row(self, digits: int | None = 4) -> dict[str, Any]:
        """The ``efficacy-table`` object: group, gains, gaps and region."""
        return {"group": self.group, "Gain_DA": _round(self.Gain_DA, digits),
                "Gain_CoT": _round(self.Gain_CoT, digits), "GAP_B": _round(self.GAP_B, digits),
                "GAP_DT": _round(self.GAP_DT, digits), "region": self.region}

    def full_row(self, digits: int | None = 4) -> dict[str, Any]:
        """Scores, gains, gaps and region (the per-group part of ``efficacy.json``)."""
        return {"group": self.group,
                **{name: _round(getattr(self, name), digits) for name in SCORE_NAMES},
                **{k: v for k, v in self.table_row(digits).items() if k != "group"}}


def _round(value: float, digits: int | None) -> float:
    # Rounding is for presentation only: regions are decided on the exact values.
    return value if digits is None else round(value, digits)


def check_score(name: str, value: Any, where: str = "") -> float:
    """A score as a float, or ValueError naming it: finite and non-negative (accuracies)."""
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool):
        raise ValueError(f"{prefix}{name}={value!r} is not a number; give an accuracy")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{prefix}{name}={value!r} is not a number; give an accuracy such "
                         f"as 37.57") from None
    if not math.isfinite(number):
        raise ValueError(f"{prefix}{name}={value!r} is not a finite number; give an accuracy")
    if number < 0:
        raise ValueError(f"{prefix}{name}={number} is negative; scores are accuracies (≥ 0), "
                         f"not differences")
    return number


def group_metrics(group: str, B_S: float, B_L: float, DT_S: float, DT_L: float) -> GroupMetrics:
    """Gains, gaps and region for one group's four scores (see the module docstring)."""
    b_s, b_l, dt_s, dt_l = (check_score(n, v, f"group {group!r}")
                            for n, v in zip(SCORE_NAMES, (B_S, B_L, DT_S, DT_L), strict=True))
    b_star = max(b_s, b_l)
    if b_star > 0:
        gain_da = 100.0 * (dt_s - b_star) / b_star
        gain_cot = 100.0 * (dt_l - b_star) / b_star
        basis: Literal["relative", "absolute"] = "relative"
    else:
        gain_da, gain_cot, basis = dt_s - b_star, dt_l - b_star, "absolute"
    return GroupMetrics(group=group, B_S=b_s, B_L=b_l, DT_S=dt_s, DT_L=dt_l, B_star=b_star,
                        Gain_DA=gain_da, Gain_CoT=gain_cot, GAP_B=b_l - b_s, GAP_DT=dt_l - dt_s,
                        region=region_of(gain_da, gain_cot), gain_basis=basis)


def estimate_region(B_S: float, B_L: float, saturation: float, scale: float = 100.0,
                    margin: float = 0.0) -> Region:
    """The inference-only guess from the base model alone (no training).

    A base that already gets ``saturation`` (a fraction of ``scale``) right in its better mode
    leaves little to gain: ``detrimental``. Otherwise the mode the base is already better at
    (by more than ``margin`` points) is the one training will help; ties go to direct.
    """
    if max(B_S, B_L) >= saturation * scale:
        return DETRIMENTAL
    return REASONING if B_L - B_S > margin else DIRECT
