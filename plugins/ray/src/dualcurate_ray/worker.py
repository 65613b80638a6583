"""The actor of a stage's pool: builds the stage from the picklable job, sets it (and its
engines) up once, and runs the shards the driver hands it.

A generating stage's actor streams exactly as the local executor does: each shard runs in its
own thread of the (threaded) actor, and their requests flow into the actor's one engine
through one :class:`~dualcurate.window.GenerationWindow`. The driver asks ``admit()`` before
handing a shard over; it returns when the actor's engine holds fewer than ``depth ×
capacity`` unanswered samples and no shard of it is still preparing its first requests, so
one vLLM engine per GPU actor is fed continuously and the next shard goes to whichever actor
is hungry first. A stage that does not generate runs one shard at a time per actor (one more
is admitted while it runs, so the actor never waits for the driver).

Finished shards are staged in the shared run store (``store.stage_shard``); the driver
commits them, in order. Model answers go to the actor's own cache segment
(:class:`~dualcurate.cache_segments.SegmentedCache`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from dualcurate.cache_segments import SegmentedCache
from dualcurate.context import StageContext
from dualcurate.executors import empty_shard, output_types, process_shard
from dualcurate.stages import MapJob
from dualcurate.store import RunStore
from dualcurate.window import GenerationWindow

Registry = dict[str, dict[str, type]]


def make_host(registry: Registry | None) -> Any:
    """The actor's plugin host: the driver's registry registered by the names the driver
    knows its classes by (every kind, :class:`~dualcurate.plugins.RegistryPlugin`), so an
    actor resolves engines, model builders and the stages a stage builds exactly as the
    driver does, including plugins registered in-process; None: every installed plugin."""
    from dualcurate.plugins import PluginHost, RegistryPlugin

    if registry is None:
        return PluginHost()
    host = PluginHost(autoload=False, builtins=False)
    host.register(RegistryPlugin(registry), name="driver")
    return host


class ShardWorker:
    """One actor of a stage's pool (wrapped with ``ray.remote`` by the executor)."""

    def __init__(self, job: MapJob, writer: str, attach: list[str], registry: Registry | None,
                 max_shards_in_flight: int, depth: int):
        self.job = job
        self.writer = writer
        self.generating = bool(job.stage_cls.generates)
        self.limit = max_shards_in_flight if self.generating else 2
        self.store = RunStore(job.run_dir)
        self.cache = SegmentedCache(job.cache, writer, attach) if job.cache else None
        self.window = GenerationWindow(depth=depth)
        self.cond = self.window.condition
        self.running: set[int] = set()
        self.reserved = 0
        self.closed = False
        self.serial = threading.Lock()
        self.busy_s = 0.0  # wall seconds in process_shard (CPU stages: utilisation)
        self.cpu_s = 0.0
        self.shards = 0
        self.stage = job.make_stage()
        self.ctx = StageContext(stage_name=job.stage_name,
                                workdir=self.store.artifacts_dir(job.stage_name),
                                store=self.store, cache=self.cache, host=make_host(registry),
                                seed=job.seed)
        self.stage.setup(self.ctx)  # once per actor: models and engines load here

    def info(self) -> dict[str, Any]:
        """Where this actor runs and what it holds (tests and logs)."""
        import ray

        pg = ray.util.get_current_placement_group()
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "placement_group": pg.id.hex() if pg is not None else None,
                "bundles": pg.bundle_specs if pg is not None else None,
                "writer": self.writer}

    # admission ---------------------------------------------------------------------------------
    def admit(self) -> bool:
        """Block until this actor wants another shard; reserve a place for it. False once the
        actor is closing."""
        with self.cond:
            while not self.closed:
                if self.window.may_admit(self.running, self.reserved, self.limit,
                                          self.generating):
                    self.reserved += 1
                    return True
                self.cond.wait(timeout=1.0)
        return False

    def release(self) -> None:
        """Give back a place ``admit`` reserved (the driver had no shard for it)."""
        with self.cond:
            self.reserved = max(self.reserved - 1, 0)
            self.cond.notify_all()

    # work --------------------------------------------------------------------------------------
    def run_shard(self, index: int, attach: list[str] | None = None) -> tuple[int, str, int, int,
                                                                              int]:
        """Process upstream shard ``index`` and stage the result: (index, staged path, rows
        in, rows out, failed requests)."""
        if attach and self.cache is not None:
            self.cache.attach(attach)
        with self.cond:
            self.reserved = max(self.reserved - 1, 0)
            self.running.add(index)
        try:
            if self.generating:
                shard_ctx = self.ctx.for_shard(index, self.window)
                rows_in, out = process_shard(self.stage, shard_ctx, self.store,
                                             self.job.upstream, index)
            else:
                with self.serial:
                    shard_ctx = self.ctx.for_shard(index)
                    started, cpu = time.monotonic(), time.process_time()
                    rows_in, out = process_shard(self.stage, shard_ctx, self.store,
                                                 self.job.upstream, index)
                    self.busy_s += time.monotonic() - started
                    self.cpu_s += time.process_time() - cpu
            self.shards += 1
            staged = self.store.stage_shard(self.job.stage_name, index,
                                            out if out else empty_shard(),
                                            output_types(self.stage, self.store,
                                                         self.job.upstream, index),
                                            base=(self.job.upstream, index))
            return index, str(staged), rows_in, len(out), shard_ctx.stats.failed
        finally:
            with self.cond:
                self.running.discard(index)
                self.window.engaged.discard(index)
                self.cond.notify_all()

    def close(self) -> dict[str, Any]:
        """Tear the stage down and close the cache segment (every answer is on disk)."""
        with self.cond:
            self.closed = True
            self.window.cancelled = True
            self.cond.notify_all()
        try:
            self.stage.teardown()
        finally:
            self.ctx.close()
            if self.cache is not None:
                self.cache.close()
        return {"writer": self.writer, "hits": getattr(self.cache, "hits", 0),
                "misses": getattr(self.cache, "misses", 0), "shards": self.shards,
                "busy_s": round(self.busy_s, 3), "cpu_s": round(self.cpu_s, 3)}
