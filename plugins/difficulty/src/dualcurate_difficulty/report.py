"""The difficulty report: pass-rate histograms per source and per domain, and the rollout budget
spent against full-k sampling. Written to the stage's artifacts folder as
``difficulty_report.json``, ``difficulty_report.md`` and ``pass_rate_histogram.svg``; the same
histograms (one drawing, :func:`histogram_svg`) make the pass-rate section of the run report
(:func:`report_sections`, hook ``dualcurate_report_sections``) and the table ``curate run``
ends with."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualcurate.report_sections import ReportSection, RunView, SampleField, SummaryTable

if TYPE_CHECKING:
    from dualcurate import RunStore

EARLY_ABOVE_0, EARLY_BELOW_1 = "> 0 (stopped early)", "< 1 (stopped early)"
BINS = ("0", "(0, 0.25]", "(0.25, 0.5]", "(0.5, 0.75]", "(0.75, 1)", "1", EARLY_ABOVE_0,
        EARLY_BELOW_1, "none")
SUMMARY_COLUMNS = ("source", "domain", "pass_rate", "pass_correct", "pass_drawn",
                   "keep")


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
    rows: list[dict[str, Any]] = []
    for i in store.finished_shards(stage):
        names = set(store.shard_schema(stage, i).names)
        columns = [c for c in SUMMARY_COLUMNS if c in names]
        if "pass_rate" in columns:
            rows.extend(store.read_shard(stage, i, columns).to_pylist())
    return rows


def build_report(rows: Iterable[dict[str, Any]], k: int) -> dict[str, Any]:
    """Histogram counts per source and per domain, kept counts and the rollout budget."""
    rows = list(rows)

    def group(key: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            name = str(row.get(key) or "")
            g = out.setdefault(name, {"samples": 0, "kept": 0, "pass_drawn": 0,
                                      "pass_rate_sum": 0.0, "with_rate": 0,
                                      "histogram": dict.fromkeys(BINS, 0)})
            g["samples"] += 1
            g["kept"] += bool(row.get("keep"))
            g["pass_drawn"] += int(row.get("pass_drawn") or 0)
            g["histogram"][known_bin(row, k)] += 1
            if row.get("pass_rate") is not None:
                g["pass_rate_sum"] += float(row["pass_rate"])
                g["with_rate"] += 1
        for g in out.values():
            g["mean_pass_rate"] = (round(g.pop("pass_rate_sum") / g["with_rate"], 4)
                                   if g["with_rate"] else None)
            g.pop("with_rate")
            g["rollout_ratio"] = round(g["pass_drawn"] / (k * g["samples"]), 4)
        return dict(sorted(out.items()))

    used = sum(int(r.get("pass_drawn") or 0) for r in rows)
    full = k * len(rows)
    return {
        "k": k,
        "samples": len(rows),
        "kept": sum(bool(r.get("keep")) for r in rows),
        "pass_drawn": used,
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
        f"- rollouts: {report['pass_drawn']} used of {report['rollouts_full_k']} at full "
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
                         f"{g['mean_pass_rate']} | {g['pass_drawn']} | {g['rollout_ratio']}"
                         f" | " + " | ".join(str(g["histogram"][b]) for b in report["bins"])
                         + " |")
    return "\n".join(lines) + "\n"


def histogram_svg(counts: list[int], labels: Iterable[str], width: int = 260,
                  height: int = 120) -> str:
    """Bars of samples per pass-rate bin, one per label (" (stopped early)" shown as "*")."""
    labels = list(labels)
    width = max(width, 46 * len(counts))
    top = max(counts, default=0) or 1
    bar = (width - 20) / max(len(counts), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="hist" width="{width}" '
             f'height="{height + 30}" viewBox="0 0 {width} {height + 30}" role="img" '
             f'aria-label="pass-rate histogram">']
    for i, n in enumerate(counts):
        h = (height - 16) * n / top
        x = 10 + i * bar
        parts.append(f'<rect x="{x + 2:.1f}" y="{height - h:.1f}" width="{bar - 4:.1f}" '
                     f'height="{h:.1f}" fill="#5b7fbf"><title>{html.escape(labels[i])}: {n}'
                     f'</title></rect>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - h - 3:.1f}" font-size="10" '
                     f'text-anchor="middle">{n}</text>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height + 14}" font-size="9" '
                     f'text-anchor="middle">{html.escape(short_label(labels[i]))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def short_label(label: str) -> str:
    """A bin's label as figures and tables show it (" (stopped early)" as "*")."""
    return label.replace(" (stopped early)", "*")


def shown_bins(report: dict[str, Any], key: str = "by_domain") -> list[str]:
    """The bins any group of ``report[key]`` has a sample in, in bin order."""
    groups = report.get(key) or {}
    return [b for b in report.get("bins") or BINS
            if any((g.get("histogram") or {}).get(b) for g in groups.values())]


def histograms_svg(report: dict[str, Any]) -> str:
    """A standalone SVG file: one histogram per source and one per domain, captioned."""
    panels: list[tuple[str, str, int, int]] = []  # caption, svg, width, height
    for title, key in (("source", "by_source"), ("domain", "by_domain")):
        bins = shown_bins(report, key)
        for name, g in (report.get(key) or {}).items():
            svg = histogram_svg([int(g["histogram"].get(b, 0)) for b in bins], bins)
            width = max(260, 46 * len(bins))
            panels.append((f"{title}: {name or '(none)'}", svg, width, 150))
    columns = 3
    cell_w = max((p[2] for p in panels), default=260) + 20
    cell_h = 150 + 24
    rows = -(-len(panels) // columns) if panels else 1
    width, height = cell_w * min(columns, max(len(panels), 1)), cell_h * rows
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif">']
    for i, (caption, svg, _, _) in enumerate(panels):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        out.append(f'<text x="{x + 10}" y="{y + 16}" font-size="13" font-weight="600">'
                   f'{html.escape(caption)}</text>')
        out.append(f'<g transform="translate({x},{y + 24})">{svg}</g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_report(rows: Iterable[dict[str, Any]], workdir: str | Path, k: int) -> dict[str, str]:
    """Write the JSON, markdown and PNG report; return name -> path."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report = build_report(rows, k)
    paths = {
        "json": workdir / "difficulty_report.json",
        "markdown": workdir / "difficulty_report.md",
        "histogram": workdir / "pass_rate_histogram.svg",
    }
    paths["json"].write_text(json.dumps(report, indent=2, sort_keys=True))
    paths["markdown"].write_text(report_markdown(report))
    paths["histogram"].write_text(histograms_svg(report), encoding="utf-8")
    return {name: str(p) for name, p in paths.items()}


# the run report's section --------------------------------------------------------------------
#: after verification, before training
ORDER = 450
STAGE_NAME = "difficulty"  # the filter's registered name, as the manifest records it
EXPLAIN = ("Pass rate over k rollouts per sample; with adaptive sampling (the default) a sample "
           "stops drawing once its keep rule is settled, and is binned by what its draws prove "
           '(* stopped early: "> 0*", one was correct; "< 1*", one was not).')
NO_RATES = "No stage wrote a `pass_rate` column."


def summary_legend(bins: list[str], k: Any) -> list[str]:
    """What the summary table's columns mean, printed under it (a run log reads without the
    report): the counts, then one line per pass-rate column shown."""
    rollouts = f"the k={k} rollouts" if k else "the rollouts"
    lines = ["group: the domain; samples: rows the filter read; kept: rows its keep rule kept",
             f"mean pass rate: the share of {rollouts} that were correct, averaged over the "
             f"samples that drew all of them",
             "the other columns count samples:"]
    width = max((len(short_label(b)) for b in bins), default=0)
    lines += [f"  {short_label(b):<{width}}  {bin_meaning(b)}" for b in bins]
    return lines


def bin_meaning(label: str) -> str:
    """A histogram bin in words: ``(0.25, 0.5]`` is "pass rate above 0.25, at most 0.5"."""
    fixed = {"0": "pass rate 0 (no rollout correct)",
             "1": "pass rate 1 (every rollout correct)",
             EARLY_ABOVE_0: "stopped early once a rollout was correct (pass rate above 0)",
             EARLY_BELOW_1: "stopped early once a rollout was wrong (pass rate below 1)",
             "none": "no rollouts drawn (the keep rule decided without them, e.g. eval rows)"}
    if label in fixed:
        return fixed[label]
    low, high = label[1:-1].split(", ")
    top = f"at most {high}" if label.endswith("]") else f"below {high}"
    return f"pass rate above {low}, {top}"


def report_sections(run: RunView) -> list[ReportSection]:
    """One pass-rate section per difficulty filter of the run (else of its last filter with a
    ``pass_rate`` column); none when it has neither."""
    stages = [r for r in run.stages if r.get("plugin") == STAGE_NAME]
    if not stages:
        stages = [r for r in run.stages_of_kind("filter")
                  if "pass_rate" in run.columns(r["name"])][-1:]
    return [stage_section(run, rec, named=len(stages) > 1) for rec in stages]


def stage_report(run: RunView, rec: dict[str, Any]) -> dict[str, Any] | None:
    """The stage's difficulty report: the one it recorded in the manifest, else built from
    its committed shards (None: no pass rates yet)."""
    report = rec.get("report") or {}
    if isinstance(report.get("bins"), list) and isinstance(report.get("by_domain"), dict) \
            and report["by_domain"]:
        return report
    if "pass_rate" not in run.columns(rec["name"]):
        return None
    rows = run.rows(rec["name"], columns=list(SUMMARY_COLUMNS))
    if not rows:
        return None
    k = int(report.get("k") or max((int(r.get("pass_drawn") or 0) for r in rows), default=0)
            or 1)
    return build_report(rows, k)


def stage_section(run: RunView, rec: dict[str, Any], named: bool = False) -> ReportSection:
    """The pass-rate section of one filter stage: a histogram per domain, the table, the
    summary (samples, kept, mean pass rate and bins per domain), each sample's pass rate."""
    title = "Pass rates (difficulty filter)" + (f": {rec['name']}" if named else "")
    section = ReportSection(title=title, anchor="pass-rates", order=ORDER,
                            sample_fields=[SampleField("pass rate", column="pass_rate")])
    report = stage_report(run, rec)
    if report is None:
        section.html = "<p>No stage wrote a <code>pass_rate</code> column.</p>"
        section.markdown = NO_RATES
        return section
    bins = shown_bins(report)
    groups = {str(name or "(none)"): g for name, g in report["by_domain"].items()}
    counts = {name: [int((g.get("histogram") or {}).get(b, 0)) for b in bins]
              for name, g in groups.items()}
    figures = "\n".join(f"<figure><figcaption>{html.escape(name)}</figcaption>"
                        f"{histogram_svg(c, bins)}</figure>" for name, c in sorted(counts.items()))
    section.html = f'<p>{html.escape(EXPLAIN)}</p>\n<div class="figures">\n{figures}\n</div>'
    labels = [short_label(b) for b in bins]
    table = ["| group | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(bins)]
    table += [f"| {name} | " + " | ".join(str(n) for n in c) + " |"
              for name, c in sorted(counts.items())]
    section.markdown = EXPLAIN + "\n\n" + "\n".join(table)
    section.summary = SummaryTable(
        title, ["group", "samples", "kept", "mean pass rate", *labels],
        [[name, str(g.get("samples", "")), str(g.get("kept", "")),
          "–" if g.get("mean_pass_rate") is None else f"{g['mean_pass_rate']:.2f}",
          *[str(n) for n in counts[name]]] for name, g in sorted(groups.items())],
        notes=summary_legend(bins, report.get("k")))
    section.data = {"stage": rec["name"], "bins": bins, "histograms": counts,
                    "report": report}
    return section
