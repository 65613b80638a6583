"""The hello-length filter's section of a run's report: how many answers it kept, and the
limit it kept them by (read from the stage's own options)."""

from __future__ import annotations

import html

from dualcurate.report_sections import ReportSection, RunView, SummaryTable


def length_sections(run: RunView) -> list[ReportSection] | None:
    sections = []
    for record in run.stages_of_kind("filter"):
        if record.get("plugin") != "hello-length":  # the component the stage ran
            continue
        stage = record["name"]
        limit = run.stage_options(stage).get("max_answer_digits")
        rows = run.rows(stage, ["keep"])
        kept = sum(1 for row in rows if row.get("keep"))
        line = (f"{kept} of {len(rows)} answers have at most {limit} characters "
                f"(stage {stage}, max_answer_digits = {limit}).")
        sections.append(ReportSection(
            title=f"Answer length ({stage})", anchor="hello-length",
            html=f"<p>{html.escape(line)}</p>", markdown=line,
            summary=SummaryTable(title=f"hello-length ({stage})",
                                 columns=["max_answer_digits", "kept", "rows"],
                                 rows=[[str(limit), str(kept), str(len(rows))]]),
            data={"stage": stage, "max_answer_digits": limit, "kept": kept,
                  "rows": len(rows)}))
    return sections or None  # None: this run had no hello-length stage
