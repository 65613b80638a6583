"""Hook implementations (thin). Each entry point is one plugin object; stage modules are
imported inside the hooks so that listing plugins never imports torch or transformers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualcurate import Register, hookimpl

if TYPE_CHECKING:
    from dualcurate.report_sections import ReportSection, RunView


class HFDatasetPlugin:
    """Entry point ``hf-dataset``: the Hugging Face datasets / files / image-folder source,
    and the Standardisation section of run reports (from its ``standardisation.json``)."""

    @hookimpl
    def dualcurate_register_sources(self, register: Register) -> None:
        from dualcurate_hf.source import HFDatasetSource

        register(HFDatasetSource)

    @hookimpl
    def dualcurate_report_sections(self, run: RunView) -> list[ReportSection] | None:
        from dualcurate_hf.report import report_sections

        return report_sections(run) or None


class HFEnginePlugin:
    """Entry point ``hf``: the transformers generation engine."""

    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        from dualcurate_hf.engine import HFEngine

        register(HFEngine)


class HFDistillPlugin:
    """Entry point ``hf-distill``: the teacher distiller on the hf engine."""

    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        from dualcurate_hf.distill import HFDistiller

        register(HFDistiller)

    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        from dualcurate_hf.engine import HFEngine

        register(HFEngine)


hf_dataset = HFDatasetPlugin()
hf_engine = HFEnginePlugin()
hf_distill = HFDistillPlugin()
