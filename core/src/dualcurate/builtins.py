"""Core's own parts, registered through the same hooks as any plugin (listed as ``builtins``):
the local executor and the ``teacher`` distiller."""

from __future__ import annotations

from dualcurate.distill import TeacherDistiller
from dualcurate.executors import LocalExecutor
from dualcurate.hookspecs import Register, hookimpl


@hookimpl
def dualcurate_register_executors(register: Register) -> None:
    register(LocalExecutor)


@hookimpl
def dualcurate_register_distillers(register: Register) -> None:
    register(TeacherDistiller)
