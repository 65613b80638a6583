"""The difficulty report: pass-rate histograms per source and per domain, and the rollout budget
spent against full-k sampling. Written to the stage's artifacts folder as
``difficulty_report.json``, ``difficulty_report.md`` and ``pass_rate_histogram.png``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dualcurate import RunStore

EARLY_ABOVE_0, EARLY_BELOW_1 = "> 0 (stopped early)", "< 1 (stopped early)"
BINS = ("0", "(0, 0.25]", "(0.25, 0.5]", "(0.5, 0.75]", "(0.75, 1)", "1", EARLY_ABOVE_0,
        EARLY_BELOW_1, "none")
SUMMARY_COLUMNS = ("source", "domain", "pass_rate", "pass_correct", "pass_drawn",
                   "rollouts_used", "keep")


def known_bin(row: dict[str, Any], k: int) -> str:
    """The histogram bin of one sample from what is known about its k-rollout pass rate: the
    rate itself when all k rollouts were drawn; for a sample adaptive sampling stopped early,
    the bin its reachable rates ``[correct/k, (correct + k - drawn)/k]`` all fall in, else
    what the drawn rollouts prove (``> 0``: one was correct; ``< 1``: one was not)."""
    if row.get("pass_rate") is not None:
        return pass_rate_bin(row["pass_rate"])
    drawn, correct = row.get("pass_drawn"), row.get("pass_correct")
    if not drawn or correct is None or not k:
        return "none"
    lo, hi = correct / k, (correct + k - drawn) / k
    if pass_rate_bin(lo) == pass_rate_bin(hi):
        return pass_rate_bin(lo)
    if correct > 0:
        return EARLY_ABOVE_0
    if drawn > correct:
        return EARLY_BELOW_1
    return "none"


def pass_rate_bin(pass_rate: float | None) -> str:
    """The histogram bin of one pass rate (``none``: decided without rollouts)."""
    if pass_rate is None:
        return "none"
    if pass_rate <= 0.0:
        return "0"
    if pass_rate >= 1.0:
        return "1"
    for upper, label in ((0.25, BINS[1]), (0.5, BINS[2]), (0.75, BINS[3])):
        if pass_rate <= upper:
            return label
    return BINS[4]


def summary_rows_from_store(store: RunStore | None, stage: str) -> list[dict[str, Any]]:
    """The report's columns of every committed shard of ``stage``."""
    if store is None:
        return []
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for path in store.shard_files(stage):
        names = set(pq.ParquetFile(path).schema_arrow.names)
        columns = [c for c in SUMMARY_COLUMNS if c in names]
        if "pass_rate" in columns:
            rows.extend(pq.read_table(path, columns=columns).to_pylist())
    return rows


def build_report(rows: Iterable[dict[str, Any]], k: int) -> dict[str, Any]:
    """Histogram counts per source and per domain, kept counts and the rollout budget."""
    rows = list(rows)

    def group(key: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            name = str(row.get(key) or "")
            g = out.setdefault(name, {"samples": 0, "kept": 0, "rollouts_used": 0,
                                      "pass_rate_sum": 0.0, "with_rate": 0,
                                      "histogram": dict.fromkeys(BINS, 0)})
            g["samples"] += 1
            g["kept"] += bool(row.get("keep"))
            g["rollouts_used"] += int(row.get("rollouts_used") or 0)
            g["histogram"][known_bin(row, k)] += 1
            if row.get("pass_rate") is not None:
                g["pass_rate_sum"] += float(row["pass_rate"])
                g["with_rate"] += 1
        for g in out.values():
            g["mean_pass_rate"] = (round(g.pop("pass_rate_sum") / g["with_rate"], 4)
                                   if g["with_rate"] else None)
            g.pop("with_rate")
            g["rollout_ratio"] = round(g["rollouts_used"] / (k * g["samples"]), 4)
        return dict(sorted(out.items()))

    used = sum(int(r.get("rollouts_used") or 0) for r in rows)
    full = k * len(rows)
    return {
        "k": k,
        "samples": len(rows),
        "kept": sum(bool(r.get("keep")) for r in rows),
        "rollouts_used": used,
        "rollouts_full_k": full,
        "rollout_ratio": round(used / full, 4) if full else None,
        "bins": list(BINS),
        "by_source": group("source"),
        "by_domain": group("domain"),
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    lines = [
        "# Difficulty report",
        "",
        f"- samples: {report['samples']}, kept: {report['kept']}",
        f"- rollouts: {report['rollouts_used']} used of {report['rollouts_full_k']} at full "
        f"k={report['k']} (ratio {report['rollout_ratio']})",
        "",
        "Pass rates are k-rollout figures. A sample adaptive sampling settled early has no "
        "pass rate: it is binned by what its rollouts prove (its decision is exact all the "
        "same); run with adaptive = false for the full-k distribution.",
    ]
    for title, key in (("source", "by_source"), ("domain", "by_domain")):
        lines += ["", f"## By {title}", "",
                  f"| {title} | samples | kept | mean pass rate | rollouts | ratio | "
                  + " | ".join(report["bins"]) + " |",
                  "|" + "---|" * (6 + len(report["bins"]))]
        for name, g in report[key].items():
            lines.append(f"| {name or '(none)'} | {g['samples']} | {g['kept']} | "
                         f"{g['mean_pass_rate']} | {g['rollouts_used']} | {g['rollout_ratio']}"
                         f" | " + " | ".join(str(g["histogram"][b]) for b in report["bins"])
                         + " |")
    return "\n".join(lines) + "\n"


def plot_histograms(report: dict[str, Any], path: Path) -> Path:
    """One bar chart per grouping (source, domain): samples per pass-rate bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = [b for b in report["bins"] if b != "none"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
    for ax, (title, key) in zip(axes[0], (("source", "by_source"), ("domain", "by_domain")),
                                strict=True):
        groups = report[key]
        width = 0.8 / max(len(groups), 1)
        for gi, (name, g) in enumerate(groups.items()):
            xs = [i + gi * width for i in range(len(bins))]
            ax.bar(xs, [g["histogram"][b] for b in bins], width=width, label=name or "(none)")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(bins))], bins, fontsize=8)
        ax.set_xlabel("pass rate")
        ax.set_ylabel("samples")
        ax.set_title(f"pass rate by {title}")
        if groups:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(rows: Iterable[dict[str, Any]], workdir: str | Path, k: int) -> dict[str, str]:
    """Write the JSON, markdown and PNG report; return name -> path."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report = build_report(rows, k)
    paths = {
        "json": workdir / "difficulty_report.json",
        "markdown": workdir / "difficulty_report.md",
        "histogram": workdir / "pass_rate_histogram.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2, sort_keys=True))
    paths["markdown"].write_text(report_markdown(report))
    plot_histograms(report, paths["histogram"])
    return {name: str(p) for name, p in paths.items()}
