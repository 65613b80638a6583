"""The Dual Tuning section of a run's report (hook ``dualcurate_report_sections``): the table
and the scatter (each drawn once, in :mod:`~dualcurate_dualtuning.table` and
:mod:`~dualcurate_dualtuning.plot`), the short table ``curate run`` ends with, each sample's
region, and a copy of the results as ``efficacy.json`` beside the report."""

from __future__ import annotations

import html
import json

from dualcurate.report_sections import ReportSection, RunView, SampleField
from dualcurate_dualtuning.plot import scatter_svg
from dualcurate_dualtuning.results import EFFICACY_FILE, REGION_COLOURS, efficacy_results
from dualcurate_dualtuning.table import (
    IMAGE_EXPLAIN,
    TABLE_COLUMNS,
    columns_of,
    summary_table,
    table_html,
    table_markdown,
)

#: after training (650 sits between a trainer's section and the sample browser)
ORDER = 650
EXPLAIN = ("B* = max(B_S, B_L); Gain_DA = 100·(DT_S − B*)/B*; Gain_CoT = 100·(DT_L − B*)/B*. "
           "Accuracies in %.")
NO_RESULTS = "No efficacy judge results in this run yet."


def report_section(run: RunView) -> ReportSection | None:
    """The section, when the run has an efficacy judge stage or its results (else None)."""
    groups, results, source = efficacy_results(run)
    if not groups and not run.stages_of_kind("efficacy_judge"):
        return None
    section = ReportSection(title="Dual Tuning", anchor="dual-tuning", order=ORDER)
    if not groups:
        section.html = f"<p>{NO_RESULTS}</p>"
        section.markdown = NO_RESULTS
        return section
    basis = results.get("gain_basis") or {}
    absolute = isinstance(basis, dict) and "absolute" in basis.values()
    explain = EXPLAIN + (f" {IMAGE_EXPLAIN}" if columns_of(groups) != TABLE_COLUMNS else "")
    caption = ("Gain_DA against Gain_CoT per group; shaded: reasoning-benefit (blue), "
               "direct-benefit (green), detrimental (red).")
    section.html = (f"<p>{html.escape(explain)} Source: {html.escape(str(source))}.</p>\n"
                    f"{table_html(groups)}\n"
                    f'<figure id="scatter">{scatter_svg(groups, absolute=absolute)}'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    section.markdown = f"{explain} Source: `{source}`.\n\n{table_markdown(groups)}"
    section.summary = summary_table(groups)
    section.data = {"groups": groups, "source": source}
    section.files = {EFFICACY_FILE: json.dumps({"groups": groups, "source": source},
                                               indent=2, ensure_ascii=False) + "\n"}
    section.sample_fields = [SampleField(
        "region", by_group={str(g.get("group")): str(g.get("region")) for g in groups},
        colours=dict(REGION_COLOURS))]
    return section
