"""The efficacy scatter: Gain_DA (x) against Gain_CoT (y), one point per group, regions shaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dualcurate_dualtuning.metrics import GroupMetrics

COLOURS = {"reasoning-benefit": "#4c72b0", "direct-benefit": "#dd8452", "detrimental": "#c44e52"}


def scatter(groups: Sequence[GroupMetrics], path: str | Path, title: str = "") -> Path:
    """Write the scatter plot PNG to ``path`` (matplotlib's Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Polygon

    xs = [g.Gain_DA for g in groups]
    ys = [g.Gain_CoT for g in groups]
    span = max([10.0, *(abs(v) for v in xs + ys)]) * 1.2
    lo, hi = -span, span
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    # reasoning: y > 0 and y > x; direct: x > 0 and x >= y; detrimental: the rest (x, y <= 0)
    regions = {
        "reasoning-benefit": [(lo, 0), (0, 0), (hi, hi), (lo, hi)],
        "direct-benefit": [(0, lo), (hi, lo), (hi, hi), (0, 0)],
        "detrimental": [(lo, lo), (0, lo), (0, 0), (lo, 0)],
    }
    for name, corners in regions.items():
        ax.add_patch(Polygon(corners, closed=True, facecolor=COLOURS[name], alpha=0.15,
                             edgecolor="none", label=name))
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.plot([0, hi], [0, hi], color="grey", linewidth=0.8, linestyle="--")
    for g in groups:
        ax.scatter([g.Gain_DA], [g.Gain_CoT], color=COLOURS[g.region], edgecolor="black",
                   zorder=3, s=40)
        ax.annotate(g.group, (g.Gain_DA, g.Gain_CoT), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    relative = all(g.gain_basis == "relative" for g in groups)
    unit = "%" if relative else "% (points where B* = 0)"
    ax.set_xlabel(f"Gain_DA {unit}: dual model, direct mode vs best base")
    ax.set_ylabel(f"Gain_CoT {unit}: dual model, reasoning mode vs best base")
    ax.set_title(title or "Dual Tuning efficacy per group")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, linewidth=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
