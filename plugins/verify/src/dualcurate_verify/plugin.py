"""Hook implementations (thin): each entry point is one plugin object. Stage modules are
imported inside the hooks, so listing plugins stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualcurate import Register, hookimpl

if TYPE_CHECKING:
    import click


def _add_check_command(cli: click.Group) -> None:
    # both plugin objects offer `curate check` (either may be loaded alone); add it once
    if "check" not in cli.commands:
        from dualcurate_verify.cli import check_cmd

        cli.add_command(check_cmd)


class RuleVerifyPlugin:
    """Entry point ``rule-verify``: structure and answer rules; adds ``curate check``."""

    @hookimpl
    def dualcurate_register_verifiers(self, register: Register) -> None:
        from dualcurate_verify.stage import RuleVerifier

        register(RuleVerifier)

    @hookimpl
    def dualcurate_register_commands(self, cli: click.Group) -> None:
        _add_check_command(cli)


class CompassJudgePlugin:
    """Entry point ``compass-judge``: the rules, then an LLM judge for what they leave
    undecided."""

    @hookimpl
    def dualcurate_register_verifiers(self, register: Register) -> None:
        from dualcurate_verify.judge import CompassJudge

        register(CompassJudge)

    @hookimpl
    def dualcurate_register_commands(self, cli: click.Group) -> None:
        _add_check_command(cli)


rule_verify = RuleVerifyPlugin()
compass_judge = CompassJudgePlugin()
