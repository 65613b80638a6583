"""The ``reference`` distiller: writes each row's reference solution as teacher traces.

It stands in for a teacher model offline: no model is called. The synthetic source puts a
step-by-step solution in the four phases of the distillation prompt (information, plan, steps,
check) in ``meta["solution"]``; this distiller wraps it as ``<think>…</think>`` followed by
``<answer>X</answer>``, k times per question, as trace dicts with the keys of
:class:`dualcurate.schema.Trace` (engine ``reference``). Rows without a solution get one
trace carrying an error, which verification drops.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dualcurate import Distiller, StageConfig, StageContext, Trace
from dualcurate.formats import render_trace
from dualcurate.schema import row_meta

ENGINE = "reference"
MODEL = "reference-solution"


class ReferenceConfig(StageConfig):
    samples_per_question: int = Field(default=1, ge=1)
    solution_key: str = "solution"
    splits: list[str] | None = None


class ReferenceDistiller(Distiller):
    """Offline stand-in for a teacher: the source's reference solutions as k traces per
    question. ``splits`` limits it to rows of those splits (others get no traces)."""

    name = "reference"
    Config = ReferenceConfig
    requires = ("answer", "meta")
    provides = ("traces", "n_traces")
    version = "1"

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            split = row.get("split") or row_meta(row).get("split")
            if self.config.splits is not None and split not in self.config.splits:
                traces: list[dict[str, Any]] = []
            else:
                traces = self.traces_for(row)
            out.append({**row, "traces": traces, "n_traces": len(traces)})
        return out

    def traces_for(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        solution = row_meta(row).get(self.config.solution_key)
        answer = str(row["answer"])
        traces = []
        for index in range(self.config.samples_per_question):
            if not solution:
                traces.append(Trace(
                    engine=ENGINE, model=MODEL, sample_index=index, finish_reason="error",
                    error=f"row {row.get('id', '?')}: no reference solution in "
                          f"meta[{self.config.solution_key!r}]; the reference distiller "
                          f"needs a source that writes one (e.g. synthetic), or use a "
                          f"model distiller").model_dump())
                continue
            text = render_trace(solution, answer)
            traces.append(Trace(text=text, reasoning=solution, answer=answer,
                                finish_reason="stop", completion_tokens=len(text.split()),
                                model=MODEL, engine=ENGINE, sample_index=index).model_dump())
        return traces
