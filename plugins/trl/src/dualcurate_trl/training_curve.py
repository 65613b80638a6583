"""The training curve: ``training_curve.png`` drawn from the training log's records."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any


def plot_curve(records: Iterable[dict[str, Any]], out: Path,
               keys: tuple[str, ...] = ("loss", "reward")) -> Path | None:
    """A PNG of each key in ``keys`` over steps (one panel each); None if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    series = {k: [(r["step"], r[k]) for r in records if isinstance(r.get(k), int | float)]
              for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, axes = plt.subplots(len(series), 1, figsize=(6, 2.6 * len(series)), squeeze=False)
    for ax, (key, points) in zip(axes[:, 0], series.items(), strict=True):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
