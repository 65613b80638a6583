"""Entry point ``ray``: registers the ``ray`` executor (ray itself is imported only when a
stage runs on it)."""

from __future__ import annotations

from dualcurate import Register, hookimpl


@hookimpl
def dualcurate_register_executors(register: Register) -> None:
    from dualcurate_ray.executor import RayExecutor

    register(RayExecutor)
