"""Hook implementations (thin): the ``dual-tuning`` entry point registers the judge and the
``curate efficacy-table`` command. Stage modules are imported inside the hooks, so listing
plugins never imports torch or matplotlib."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualcurate import Register, hookimpl

if TYPE_CHECKING:
    import click


class DualTuningPlugin:
    """Entry point ``dual-tuning``: the Dual Tuning efficacy judge and ``efficacy-table``."""

    @hookimpl
    def dualcurate_register_efficacy_judges(self, register: Register) -> None:
        from dualcurate_dualtuning.judge import DualTuningJudge

        register(DualTuningJudge)

    @hookimpl
    def dualcurate_register_commands(self, cli: click.Group) -> None:
        from dualcurate_dualtuning.table import efficacy_table_cmd

        cli.add_command(efficacy_table_cmd)


dual_tuning = DualTuningPlugin()
