"""Hook implementations (thin): the ``dual-tuning`` entry point registers the judge, the
``curate efficacy-table`` command and the Dual Tuning section of run reports. Stage modules
are imported inside the hooks, so listing plugins never imports torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualcurate import Register, hookimpl

if TYPE_CHECKING:
    import click

    from dualcurate.report_sections import ReportSection, RunView


class DualTuningPlugin:
    """Entry point ``dual-tuning``: the Dual Tuning efficacy judge, ``efficacy-table`` and its
    report section."""

    @hookimpl
    def dualcurate_register_efficacy_judges(self, register: Register) -> None:
        from dualcurate_dualtuning.judge import DualTuningJudge

        register(DualTuningJudge)

    @hookimpl
    def dualcurate_register_commands(self, cli: click.Group) -> None:
        from dualcurate_dualtuning.table import efficacy_table_cmd

        cli.add_command(efficacy_table_cmd)

    @hookimpl
    def dualcurate_report_sections(self, run: RunView) -> list[ReportSection] | None:
        from dualcurate_dualtuning.report import report_section

        section = report_section(run)
        return [section] if section is not None else None


dual_tuning = DualTuningPlugin()
