"""When to stop drawing rollouts for a sample: the keep decision can no longer change.

With ``k`` rollouts in all, ``drawn`` of them seen and ``correct`` of those verified correct,
the final pass rate full-k sampling would give is one of ``(correct + j) / k`` for
``j = 0 .. k - drawn``. The ``exact`` rule stops as soon as the keep expression gives the same
answer for every one of them: the decision then equals full-k sampling's decision on the same
rollouts, for any expression (``pass_rate == 0`` stops at the first correct rollout,
``pass_rate < 1`` at the first incorrect one, a band when the reachable interval lies wholly
inside or outside it).

The ``predictive`` rule also stops when the decision is merely very likely settled: it puts a
Beta prior (Jeffreys by default) on the sample's pass rate, takes the beta-binomial predictive
distribution of the remaining correct rollouts and stops once the chance that the final decision
differs from the likely one is at most ``risk``. It saves more rollouts on bands, at the price of
occasional disagreement with full-k sampling.
"""

from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dualcurate_difficulty.expr import KeepExpression

StopMode = Literal["exact", "predictive"]


def beta_binomial_pmf(j: int, m: int, alpha: float, beta: float) -> float:
    """P(J = j) for J ~ BetaBinomial(m, alpha, beta)."""
    if j < 0 or j > m:
        return 0.0
    log_choose = math.lgamma(m + 1) - math.lgamma(j + 1) - math.lgamma(m - j + 1)
    return math.exp(log_choose + _log_beta(j + alpha, m - j + beta) - _log_beta(alpha, beta))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


@dataclass(frozen=True)
class StopRule:
    """Decides keep/drop for a sample from a partial set of rollouts (or says "not yet")."""

    keep: KeepExpression
    k: int
    mode: StopMode = "exact"
    risk: float = 0.02
    prior: tuple[float, float] = (0.5, 0.5)

    def final_decision(self, row: Mapping[str, Any], correct: int) -> bool:
        """The decision full-k sampling makes when ``correct`` of ``k`` rollouts verify."""
        final = {"pass_rate": correct / self.k, "pass_drawn": self.k}
        return self.keep.evaluate(ChainMap(final, row))  # type: ignore[arg-type]

    def decide(self, row: Mapping[str, Any], correct: int, drawn: int) -> bool | None:
        """The keep decision once it is settled, else None (draw more rollouts)."""
        if not 0 <= correct <= drawn <= self.k:
            raise ValueError(f"stop rule: need 0 <= correct ({correct}) <= drawn ({drawn}) "
                             f"<= k ({self.k})")
        remaining = self.k - drawn
        outcomes = [self.final_decision(row, correct + j) for j in range(remaining + 1)]
        if all(outcomes) or not any(outcomes):
            return outcomes[0]
        if self.mode == "predictive":
            alpha, beta = self.prior[0] + correct, self.prior[1] + drawn - correct
            p_keep = sum(beta_binomial_pmf(j, remaining, alpha, beta)
                         for j, keep in enumerate(outcomes) if keep)
            if p_keep >= 1.0 - self.risk:
                return True
            if p_keep <= self.risk:
                return False
        return None
