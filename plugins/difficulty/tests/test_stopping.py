"""The stop rule on its own: exact stopping agrees with full-k for any rule; the predictive
rule agrees at least 98% of the time on a band."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate_difficulty.expr import parse_keep
from dualcurate_difficulty.stopping import StopRule, beta_binomial_pmf

RULES = ["pass_rate == 0", "pass_rate < 1", "0.25 <= pass_rate <= 0.75",
         "pass_rate > 0.5 or pass_rate == 0", "not (pass_rate >= 0.3)",
         "domain == 'math' and pass_rate < 1"]


def run_adaptive(rule: StopRule, row: dict, pattern: list[bool], round_size: int) -> tuple[bool, int]:
    correct = drawn = 0
    while True:
        decided = rule.decide(row, correct, drawn)
        if decided is not None:
            return decided, drawn
        upto = min(drawn + round_size, rule.k)
        correct += sum(pattern[drawn:upto])
        drawn = upto


@given(st.sampled_from(RULES), st.lists(st.booleans(), min_size=1, max_size=16),
       st.integers(1, 5), st.sampled_from(["math", "chart"]))
@settings(max_examples=400, deadline=None)
def test_exact_stopping_equals_full_k(rule_text: str, pattern: list[bool], round_size: int,
                                      domain: str) -> None:
    rule = StopRule(parse_keep(rule_text), k=len(pattern))
    row = {"domain": domain}
    adaptive, used = run_adaptive(rule, row, pattern, round_size)
    assert adaptive == rule.final_decision(row, sum(pattern))
    assert used <= len(pattern)


@given(st.lists(st.booleans(), min_size=1, max_size=16))
def test_exact_rules_stop_at_the_settling_rollout(pattern: list[bool]) -> None:
    k = len(pattern)
    hard = StopRule(parse_keep("pass_rate == 0"), k=k)
    _, used = run_adaptive(hard, {}, pattern, 1)
    assert used == (pattern.index(True) + 1 if True in pattern else k)
    nontrivial = StopRule(parse_keep("pass_rate < 1"), k=k)
    _, used = run_adaptive(nontrivial, {}, pattern, 1)
    assert used == (pattern.index(False) + 1 if False in pattern else k)


def test_rule_not_on_pass_rate_needs_no_rollouts() -> None:
    rule = StopRule(parse_keep("domain == 'math'"), k=8)
    assert rule.decide({"domain": "math"}, 0, 0) is True
    assert rule.decide({"domain": "chart"}, 0, 0) is False


def test_decide_checks_its_counts() -> None:
    rule = StopRule(parse_keep("hard"), k=4)
    with pytest.raises(ValueError, match="correct"):
        rule.decide({}, 3, 2)


@given(st.integers(0, 20), st.floats(0.1, 5), st.floats(0.1, 5))
def test_beta_binomial_sums_to_one(m: int, alpha: float, beta: float) -> None:
    assert sum(beta_binomial_pmf(j, m, alpha, beta) for j in range(m + 1)) == \
        pytest.approx(1.0, abs=1e-9)


def test_predictive_band_agreement_at_least_98_percent() -> None:
    rng = random.Random(0)
    exact = StopRule(parse_keep("0.25 <= pass_rate <= 0.75"), k=8)
    predictive = StopRule(exact.keep, k=8, mode="predictive", risk=0.02)
    agree = used_exact = used_pred = 0
    trials = 3000
    for _ in range(trials):
        p = rng.choice([0.0, 0.0, 0.05, 0.2, 0.5, 0.8, 0.95, 1.0, 1.0, rng.random()])
        pattern = [rng.random() < p for _ in range(8)]
        full = exact.final_decision({}, sum(pattern))
        decided, used = run_adaptive(predictive, {}, pattern, 1)
        agree += decided == full
        used_pred += used
        used_exact += run_adaptive(exact, {}, pattern, 1)[1]
    assert agree / trials >= 0.98
    assert used_pred < used_exact  # it does save rollouts over the exact rule
