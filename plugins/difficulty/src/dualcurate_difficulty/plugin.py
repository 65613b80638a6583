"""Hook implementations (thin): each entry point is one plugin object. Stage modules are
imported inside the hooks, so listing plugins imports nothing heavy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualcurate import Register, hookimpl

if TYPE_CHECKING:
    from dualcurate.export_extras import ExportField, ExportSubset
    from dualcurate.report_sections import ReportSection, RunView


class DifficultyPlugin:
    """Entry point ``difficulty``: the pass-rate filter on a proxy model, the pass-rate
    section of run reports, and the ``hard``/``nontrivial`` export subsets."""

    @hookimpl
    def dualcurate_register_filters(self, register: Register) -> None:
        from dualcurate_difficulty.filter import DifficultyFilter

        register(DifficultyFilter)

    @hookimpl
    def dualcurate_report_sections(self, run: RunView) -> list[ReportSection] | None:
        from dualcurate_difficulty.report import report_sections

        return report_sections(run) or None

    @hookimpl
    def dualcurate_export_extras(self) -> list[ExportSubset | ExportField]:
        from dualcurate_difficulty.export import export_extras

        return export_extras()


class RLSubsetPlugin:
    """Entry point ``rl-subset``: the seeded RL-subset carve-out (a whole-dataset filter), and
    the ``rl``/``sft`` export subsets."""

    @hookimpl
    def dualcurate_register_filters(self, register: Register) -> None:
        from dualcurate_difficulty.rl_subset import RLSubsetFilter

        register(RLSubsetFilter)

    @hookimpl
    def dualcurate_export_extras(self) -> list[ExportSubset | ExportField]:
        from dualcurate_difficulty.export import rl_subset_extras

        return rl_subset_extras()


difficulty = DifficultyPlugin()
rl_subset = RLSubsetPlugin()
