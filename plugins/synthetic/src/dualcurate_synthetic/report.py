"""The Teacher note of a run's report (hook ``dualcurate_report_sections`` of the ``reference``
plugin): when the ``reference`` distiller stood in for a teacher, the report says, above its
stage table, that no teacher model was run and where the traces came from."""

from __future__ import annotations

import html

from dualcurate.report_sections import ReportSection, RunView
from dualcurate_synthetic.reference import ENGINE, ReferenceDistiller

#: above the stage table (100): the first thing a reader of the report sees
ORDER = 0
#: rows of a stage with traces looked at for traces of engine ``reference``
ROWS_LOOKED_AT = 200
NOTE = ("No teacher model was run. The traces are the synthetic source's step-by-step "
        "reference solutions, written in the four-phase format by the `reference` "
        "distiller: they stand in for a teacher offline. Run a real teacher with "
        "`curate --plugin vllm-distill` (or hf-distill / openai-distill).")


def reference_ran(run: RunView) -> bool:
    """Whether the run's traces are reference solutions: a distiller stage ran the
    ``reference`` distiller, or the first rows of the first stage with traces (where they
    were written; later stages carry them) have traces of engine ``reference``."""
    if any(rec.get("plugin") == ReferenceDistiller.name
           for rec in run.stages_of_kind("distiller")):
        return True
    for rec in run.stages:
        if "traces" in run.columns(rec["name"]):
            rows = run.rows(rec["name"], columns=["traces"], limit=ROWS_LOOKED_AT)
            return any(t.get("engine") == ENGINE for r in rows for t in r.get("traces") or [])
    return False


def report_sections(run: RunView) -> list[ReportSection]:
    """The Teacher section when the reference distiller stood in for a teacher (else none)."""
    if not reference_ran(run):
        return []
    return [ReportSection(title="Teacher", anchor="teacher", order=ORDER,
                          html=f'<p class="note">{html.escape(NOTE)}</p>',
                          markdown=f"> {NOTE}", data={"note": NOTE})]
