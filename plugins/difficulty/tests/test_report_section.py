"""The pass-rate section of a run's report: one histogram per domain (the same drawing as the
filter's own ``pass_rate_histogram.svg``), from the report the filter recorded or from its
shards, its summary table and each sample's pass rate; and the filter's typed columns."""

from __future__ import annotations

import re

import pyarrow as pa

from dualcurate import rows_to_table
from dualcurate.report_sections import RunView
from dualcurate.store import RunStore
from dualcurate_difficulty.columns import COLUMN_TYPES
from dualcurate_difficulty.filter import DifficultyFilter
from dualcurate_difficulty.plugin import difficulty, rl_subset
from dualcurate_difficulty.report import (
    EARLY_ABOVE_0,
    build_report,
    histogram_svg,
    histograms_svg,
    report_sections,
)

K = 4


def rows() -> list[dict]:
    out = []
    for i in range(8):
        domain = ["math", "chart"][i % 2]
        rate = [0.0, 0.25, 1.0, None][i % 4]
        row = {"id": str(i), "source": "s", "domain": domain, "question": f"q{i}",
               "answer": str(i), "pass_rate": rate, "keep": rate != 1.0,
               "pass_drawn": K if rate is not None else 2,
               "pass_correct": int(rate * K) if rate is not None else 1}
        out.append(row)
    return out


def make_run(root, recorded: bool = True, plugin: str = "difficulty") -> RunStore:
    store = RunStore(root)
    store.write_shard("filter", 0, rows(), DifficultyFilter.column_types)
    rec = store.stage_record("filter")
    rec.update(kind="filter", plugin=plugin, status="done")
    if recorded:
        rec["report"] = build_report(rows(), K)
    store.save_manifest()
    return store


def test_section_from_the_recorded_report(tmp_path):
    make_run(tmp_path / "run")
    (section,) = report_sections(RunView(tmp_path / "run"))
    assert section.anchor == "pass-rates" and section.order == 450
    assert section.data["bins"] == ["0", "(0, 0.25]", "1", EARLY_ABOVE_0]
    assert section.data["histograms"] == {"chart": [0, 2, 0, 2], "math": [2, 0, 2, 0]}
    # one figure per domain, drawn by the same function as the filter's SVG file
    assert section.html.count('class="hist"') == 2
    assert histogram_svg([0, 2, 0, 2], section.data["bins"]) in section.html
    assert "&gt; 0*" in section.html
    assert "| chart | 0 | 2 | 0 | 2 |" in section.markdown and "> 0*" in section.markdown
    assert section.summary.columns == ["group", "samples", "kept", "mean pass rate", "0",
                                       "(0, 0.25]", "1", "> 0*"]
    assert section.summary.rows[1] == ["math", "4", "2", "0.50", "2", "0", "2", "0"]
    (field,) = section.sample_fields
    assert field.value({"pass_rate": 0.25}, "math") == "0.25"
    assert field.value({"pass_rate": None}, "math") is None


def test_section_from_the_shards_when_nothing_was_recorded(tmp_path):
    make_run(tmp_path / "run", recorded=False, plugin="someone-elses-filter")
    (section,) = report_sections(RunView(tmp_path / "run"))
    assert section.data["histograms"] == {"chart": [0, 2, 0, 2], "math": [2, 0, 2, 0]}
    assert section.data["report"]["k"] == K  # the most rollouts any sample drew


def test_no_section_without_pass_rates(tmp_path):
    store = RunStore(tmp_path / "plain")
    store.write_shard("source", 0, [{"id": "a", "question": "q", "answer": "1"}])
    store.stage_record("source").update(kind="source", plugin="synthetic")
    store.save_manifest()
    assert report_sections(RunView(tmp_path / "plain")) == []
    assert difficulty.dualcurate_report_sections(RunView(tmp_path / "plain")) is None
    assert not hasattr(rl_subset, "dualcurate_report_sections")  # one section, not two
    store.stage_record("filter").update(kind="filter", plugin="difficulty", status="running")
    store.save_manifest()
    (section,) = report_sections(RunView(tmp_path / "plain"))
    assert "No stage wrote a <code>pass_rate</code> column." in section.html
    assert section.summary is None


def test_histogram_file_holds_one_figure_per_source_and_domain():
    svg = histograms_svg(build_report(rows(), K))
    assert svg.count('class="hist"') == 3  # source s; domains chart and math
    assert "source: s" in svg and "domain: chart" in svg


def test_an_all_none_pass_rate_shard_stays_float64():
    assert DifficultyFilter.column_types is COLUMN_TYPES
    table = rows_to_table([{"id": "a", "pass_rate": None, "rollouts": None, "keep": True}],
                          DifficultyFilter.column_types)
    assert table.schema.field("pass_rate").type == pa.float64()
    assert table.schema.field("rollouts").type == COLUMN_TYPES["rollouts"]


def test_summary_explains_its_columns_under_the_table(tmp_path):
    """A run log reads without the report: one legend line per pass-rate column shown."""
    from dualcurate_difficulty.report import BINS, bin_meaning

    make_run(tmp_path / "run")
    (section,) = report_sections(RunView(tmp_path / "run"))
    notes = "\n".join(section.summary.notes)
    assert "k=4 rollouts" in notes and "kept: rows its keep rule kept" in notes
    for label in section.summary.columns[4:]:  # "0", "(0, 0.25]", "1", "> 0*"
        assert f"\n  {label} " in notes, label
    assert "pass rate above 0, at most 0.25" in notes
    assert "stopped early once a rollout was correct" in notes
    assert "none" not in section.summary.columns and "no rollouts drawn" not in notes
    assert len({bin_meaning(b) for b in BINS}) == len(BINS)  # every bin has its own words
    assert bin_meaning("(0.75, 1)") == "pass rate above 0.75, below 1"


def test_run_log_prints_the_whole_table_and_its_legend(tmp_path, run_cli):
    """`curate report` into a log (not a terminal, width guessed as 80): a group name wider
    than that is printed whole, not cut with "…", and the legend follows the table."""
    long_domain = "a-domain-name-long-enough-to-push-the-table-past-eighty-columns-" * 2
    store = RunStore(tmp_path / "run")
    wide = [{**row, "domain": long_domain if row["domain"] == "math" else row["domain"]}
            for row in rows()]
    store.write_shard("filter", 0, wide, DifficultyFilter.column_types)
    store.stage_record("filter").update(kind="filter", plugin="difficulty", status="done",
                                        report=build_report(wide, K))
    store.save_manifest()
    result = run_cli("report", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    assert "…" not in result.stderr
    line = next(ln for ln in result.stderr.splitlines() if long_domain in ln)
    assert line.split()[1:] == ["4", "2", "0.50", "2", "0", "2", "0"]  # every column
    legend = result.stderr.split(long_domain)[1]
    assert "k=4 rollouts" in legend
    assert re.search(r"\n  > 0\* +stopped early once a rollout was correct", legend)
