"""Dual Tuning metrics and region rules: the paper's vectors, then properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualcurate_dualtuning.metrics import (
    DETRIMENTAL,
    DIRECT,
    REASONING,
    REGIONS,
    estimate_region,
    group_metrics,
    region_of,
)


def test_vsi_bench_vector_is_direct_benefit():
    m = group_metrics("VSI-Bench", 37.57, 24.91, 51.35, 43.26)
    assert round(m.Gain_DA, 2) == 36.68
    assert round(m.Gain_CoT, 2) == 15.15
    assert round(m.GAP_DT, 2) == -8.09
    assert round(m.GAP_B, 2) == -12.66
    assert m.B_star == 37.57
    assert m.region == DIRECT
    assert m.gain_basis == "relative"


def test_mathvista_vector_is_reasoning_benefit():
    m = group_metrics("MathVista", 69.80, 69.83, 67.37, 72.87)
    assert round(m.Gain_DA, 2) == -3.52
    assert round(m.Gain_CoT, 2) == 4.35
    assert round(m.GAP_DT, 2) == 5.50
    assert m.region == REASONING


def test_table_row_rounds_for_presentation_only():
    m = group_metrics("VSI-Bench", 37.57, 24.91, 51.35, 43.26)
    row = m.table_row()
    assert list(row) == ["group", "Gain_DA", "Gain_CoT", "GAP_B", "GAP_DT", "region"]
    assert row["GAP_DT"] == -8.09
    assert row["Gain_DA"] == 36.6782
    assert list(m.full_row()) == ["group", "B_S", "B_L", "DT_S", "DT_L", "Gain_DA",
                                  "Gain_CoT", "GAP_B", "GAP_DT", "region"]


@pytest.mark.parametrize(("gain_da", "gain_cot", "region"), [
    (-1.0, -2.0, DETRIMENTAL),      # the paper's detrimental: both negative
    (0.0, 0.0, DETRIMENTAL),        # training bought nothing
    (0.0, -3.0, DETRIMENTAL),
    (-3.0, 0.0, DETRIMENTAL),
    (5.0, 5.0, DIRECT),             # tie: direct reaches it with fewer tokens
    (5.0, 0.0, DIRECT),
    (0.0, 5.0, REASONING),
    (-4.0, 2.0, REASONING),
    (2.0, -4.0, DIRECT),
    (1e-12, 0.0, DIRECT),
])
def test_boundaries(gain_da, gain_cot, region):
    assert region_of(gain_da, gain_cot) == region


def test_zero_base_falls_back_to_absolute_points():
    m = group_metrics("hard", 0.0, 0.0, 12.5, 25.0)
    assert m.gain_basis == "absolute"
    assert (m.Gain_DA, m.Gain_CoT) == (12.5, 25.0)
    assert m.region == REASONING
    assert group_metrics("hopeless", 0, 0, 0, 0).region == DETRIMENTAL


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "x", None, True])
def test_bad_scores_are_rejected_with_the_name(bad):
    with pytest.raises(ValueError, match="DT_L"):
        group_metrics("g", 1.0, 2.0, 3.0, bad)


def test_non_finite_gains_are_rejected():
    with pytest.raises(ValueError, match="Gain_CoT"):
        region_of(1.0, float("nan"))


# properties ------------------------------------------------------------------------------------
gains = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
# accuracies with two decimals, as evaluators report them
scores = st.integers(min_value=0, max_value=10_000).map(lambda x: x / 100)


def predicates(gain_da: float, gain_cot: float) -> dict[str, bool]:
    """The three regions as the docs state them, each on its own."""
    return {
        REASONING: gain_cot > 0 and gain_cot > gain_da,
        DIRECT: gain_da > 0 and gain_da >= gain_cot,
        DETRIMENTAL: max(gain_da, gain_cot) <= 0,
    }


@given(gains, gains)
def test_regions_are_total_and_exclusive(gain_da, gain_cot):
    held = [name for name, ok in predicates(gain_da, gain_cot).items() if ok]
    assert len(held) == 1
    assert region_of(gain_da, gain_cot) == held[0]
    assert region_of(gain_da, gain_cot) in REGIONS


@given(gains, gains)
def test_papers_detrimental_is_inside_ours(gain_da, gain_cot):
    if gain_da < 0 and gain_cot < 0:
        assert region_of(gain_da, gain_cot) == DETRIMENTAL


@given(scores, scores, scores, scores)
def test_region_in_raw_scores(b_s, b_l, dt_s, dt_l):
    """The region only depends on how DT_S and DT_L compare with B* and each other."""
    m = group_metrics("g", b_s, b_l, dt_s, dt_l)
    best = max(b_s, b_l)
    if dt_l > best and dt_l > dt_s:
        assert m.region == REASONING
    elif dt_s > best and dt_s >= dt_l:
        assert m.region == DIRECT
    else:
        assert max(dt_s, dt_l) <= best
        assert m.region == DETRIMENTAL
    assert m.GAP_B == b_l - b_s
    assert m.GAP_DT == dt_l - dt_s
    assert m.B_star == best


@given(scores, scores, scores, scores, st.integers(min_value=-20, max_value=20))
def test_power_of_two_scaling_changes_nothing(b_s, b_l, dt_s, dt_l, k):
    """Percent vs fraction: multiplying every score by 2**k is exact in floating point, so
    relative gains and regions must be identical."""
    c = 2.0 ** k
    a = group_metrics("g", b_s, b_l, dt_s, dt_l)
    b = group_metrics("g", b_s * c, b_l * c, dt_s * c, dt_l * c)
    assert b.region == a.region
    if a.gain_basis == "relative":
        assert (b.Gain_DA, b.Gain_CoT) == (a.Gain_DA, a.Gain_CoT)


@given(scores, scores, scores, scores, st.floats(min_value=1e-3, max_value=1e3))
def test_any_positive_scale_keeps_gains(b_s, b_l, dt_s, dt_l, c):
    a = group_metrics("g", b_s, b_l, dt_s, dt_l)
    b = group_metrics("g", b_s * c, b_l * c, dt_s * c, dt_l * c)
    if a.gain_basis == "relative":
        assert math.isclose(a.Gain_DA, b.Gain_DA, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(a.Gain_CoT, b.Gain_CoT, rel_tol=1e-9, abs_tol=1e-9)
        # regions agree wherever the point is not within rounding of a boundary
        margins = (abs(a.Gain_DA), abs(a.Gain_CoT), abs(a.Gain_CoT - a.Gain_DA))
        if min(margins) > 1e-6:
            assert a.region == b.region


@given(scores, scores)
def test_gaps_are_not_scale_free_but_antisymmetric(x, y):
    assert group_metrics("g", x, y, x, y).GAP_B == -group_metrics("g", y, x, y, x).GAP_B


def test_estimate():
    assert estimate_region(30.0, 50.0, saturation=0.95) == REASONING
    assert estimate_region(50.0, 30.0, saturation=0.95) == DIRECT
    assert estimate_region(40.0, 40.0, saturation=0.95) == DIRECT
    assert estimate_region(96.0, 10.0, saturation=0.95) == DETRIMENTAL
    assert estimate_region(30.0, 32.0, saturation=0.95, margin=5.0) == DIRECT
