"""Core's own parts, registered through the same hooks as any plugin (listed as ``builtins``)."""

from __future__ import annotations

from dualcurate.executors import LocalExecutor
from dualcurate.hookspecs import Register, hookimpl


@hookimpl
def dualcurate_register_executors(register: Register) -> None:
    register(LocalExecutor)
