"""dualcurate-ray: the ``ray`` executor. Map stages run on a Ray cluster, dispatched by
shard to an actor pool per stage; shards are committed by the driver in order, exactly as
the ``local`` executor commits them."""

from __future__ import annotations

__all__ = ["RayExecutor", "RayExecutorConfig"]


def __getattr__(name: str):  # lazy: importing the plugin never imports ray
    if name in __all__:
        from dualcurate_ray import executor

        return getattr(executor, name)
    raise AttributeError(name)
