"""Hook implementations only: register the components under their names. Each hook is a
function marked @hookimpl, named exactly as in docs/plugin-hooks.md."""

from dualcurate import Register, hookimpl
from dualcurate_hello.stages import AnswerLengthFilter, HelloSource


@hookimpl
def dualcurate_register_sources(register: Register) -> None:
    register(HelloSource)


@hookimpl
def dualcurate_register_filters(register: Register) -> None:
    register(AnswerLengthFilter)


@hookimpl
def dualcurate_register_engines(register: Register) -> None:
    from dualcurate_hello.engine import SumEngine

    register(SumEngine)


@hookimpl
def dualcurate_report_sections(run):
    from dualcurate_hello.report import length_sections

    return length_sections(run)
