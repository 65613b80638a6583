"""Hook implementations (thin): each entry point is one plugin object. Stage modules are
imported inside the hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualcurate import Register, hookimpl

if TYPE_CHECKING:
    from dualcurate.report_sections import ReportSection, RunView


class SyntheticPlugin:
    """Entry point ``synthetic``: the rendered-puzzle source (the embedded default), the
    ``synthetic-base`` model builder of the demo's tiny base model, and the ``hf-text``
    engine that model is evaluated with."""

    @hookimpl
    def dualcurate_register_sources(self, register: Register) -> None:
        from dualcurate_synthetic.source import SyntheticSource

        register(SyntheticSource)

    @hookimpl
    def dualcurate_register_model_builders(self, register: Register) -> None:
        from dualcurate_synthetic.base_model import SyntheticBaseBuilder

        register(SyntheticBaseBuilder)

    @hookimpl
    def dualcurate_register_engines(self, register: Register) -> None:
        try:
            from dualcurate_synthetic.student import TextStudentEngine
        except ImportError:  # dualcurate-hf not installed: no hf-text engine
            return
        register(TextStudentEngine)


class ReferencePlugin:
    """Entry point ``reference``: the offline teacher stand-in (reference solutions), and the
    Teacher note of run reports whose traces it wrote."""

    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        from dualcurate_synthetic.reference import ReferenceDistiller

        register(ReferenceDistiller)

    @hookimpl
    def dualcurate_report_sections(self, run: RunView) -> list[ReportSection] | None:
        from dualcurate_synthetic.report import report_sections

        return report_sections(run) or None


synthetic = SyntheticPlugin()
reference = ReferencePlugin()
