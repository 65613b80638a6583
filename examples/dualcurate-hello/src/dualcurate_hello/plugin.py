"""Hook implementations only: register the stages under their names."""

from dualcurate import Register, hookimpl
from dualcurate_hello.stages import AnswerLengthFilter, HelloSource


@hookimpl
def dualcurate_register_sources(register: Register) -> None:
    register(HelloSource)


@hookimpl
def dualcurate_register_filters(register: Register) -> None:
    register(AnswerLengthFilter)
