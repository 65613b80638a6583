"""The ``ray`` executor: every map stage on a Ray cluster, dispatched by shard to an actor pool
per stage, committed by the driver in ``job.shards``' order.

* The driver starts the stage's pool (resources from :mod:`dualcurate_ray.resources`), each
  actor building the stage from the picklable :class:`~dualcurate.stages.MapJob` and setting
  it and its engine up once (:class:`~dualcurate_ray.worker.ShardWorker`).
* Shards go to whichever actor is ready for one (``admit``): a generating stage's actor
  streams several shards through its one engine, so it is fed continuously; a CPU stage's
  actor runs one at a time.
* Actors stage finished shards in the shared run store; the driver commits each exactly
  once, in order, by atomic rename (``store.commit_staged``): resume, inspect, export and the
  local executor see a run made on Ray exactly as one made locally.
* An actor that dies (its node removed, its process killed) costs only its requests in
  flight: its shards go back to the queue and are redone by another actor (a replacement is
  started while resources allow), which reads the dead actor's cache segment, so nothing it
  answered is asked again. A shard lost ``max_attempts`` times fails the stage.
* Model answers go to one cache segment per actor, merged into the run's SQLite cache by the
  driver before and after the stage (:mod:`dualcurate.cache_segments`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from dualcurate.cache_segments import merge_segments, segment_dir
from dualcurate.stages import Executor, MapJob, MapStage, ShardDone, StageConfig
from dualcurate.window import DEFAULT_DEPTH
from dualcurate_ray.resources import Plan, StageResources, plan

if TYPE_CHECKING:
    from dualcurate.context import StageContext
    from dualcurate.store import RunStore

__all__ = ["RayExecutor", "RayExecutorConfig"]


class RayExecutorConfig(StageConfig):
    """``[run.executor_options]`` of the ``ray`` executor. None of them changes any output.

    ``address``: the cluster to join (``auto``, ``ray://host:10001``, ``host:6379``); unset:
    the one ``RAY_ADDRESS`` names, else a local Ray started for the run. ``init_options``:
    more ``ray.init`` arguments when starting a local one (``num_cpus``,
    ``object_store_memory``, ``include_dashboard``...). ``num_workers``, ``num_cpus``,
    ``num_gpus``, ``tensor_parallel_size``: every stage's pool; ``stages.<name>``: one
    stage's. ``forward_env``: names of environment variables (API keys) sent to the actors.
    """

    address: str | None = None
    init_options: dict[str, Any] = Field(default_factory=dict)
    num_workers: int | None = Field(None, ge=1)
    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)
    tensor_parallel_size: int | None = Field(None, ge=1)
    stages: dict[str, StageResources] = Field(default_factory=dict)
    max_shards_in_flight: int = Field(64, ge=1)
    depth: int = Field(DEFAULT_DEPTH, ge=1)
    forward_env: list[str] = Field(default_factory=list)
    actor_start_timeout: float = Field(600.0, gt=0)
    max_attempts: int = Field(3, ge=1)

    runtime_fields: ClassVar[frozenset[str]] = frozenset(
        {"address", "init_options", "num_workers", "num_cpus", "num_gpus",
         "tensor_parallel_size", "stages", "max_shards_in_flight", "depth", "forward_env",
         "actor_start_timeout", "max_attempts"})

    def defaults(self) -> StageResources:
        return StageResources(num_workers=self.num_workers, num_cpus=self.num_cpus,
                              num_gpus=self.num_gpus,
                              tensor_parallel_size=self.tensor_parallel_size)


def init_ray(config: RayExecutorConfig) -> float:
    """Connect to (or start) Ray once per process; the seconds it took (0 when connected)."""
    import ray

    if ray.is_initialized():
        return 0.0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the cluster
    started = time.monotonic()
    kwargs = dict(config.init_options)
    if config.address:
        kwargs["address"] = config.address
    elif not os.environ.get("RAY_ADDRESS"):
        # a local Ray started for this run: Ray starts workers at niceness 15, which on a
        # shared machine runs every stage below the priority the local executor gets
        # (measured: half the verify throughput on a loaded 2-core machine)
        system = dict(kwargs.get("_system_config") or {})
        system.setdefault("worker_niceness", 0)
        kwargs["_system_config"] = system
    kwargs.setdefault("logging_level", "warning")
    kwargs.setdefault("log_to_driver", True)
    ray.init(**kwargs)
    return time.monotonic() - started


def _death_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    return (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError)


@dataclass
class _Actor:
    n: int
    handle: Any
    writer: str
    pg: Any = None
    ready: bool = False
    alive: bool = True
    asking: bool = False  # an admit() call is outstanding
    reserved: int = 0  # admitted places the driver had no shard for
    inflight: set[int] = field(default_factory=set)
    attached: set[str] = field(default_factory=set)


@dataclass
class _Result:
    index: int
    staged: str
    rows_in: int
    rows_out: int
    failed: int


class _Pool:
    """One stage's actors, its queue of shards and the results waiting to be committed."""

    def __init__(self, job: MapJob, the_plan: Plan, config: RayExecutorConfig,
                 registry: dict[str, dict[str, type]] | None, store: RunStore):
        self.job, self.plan, self.config, self.registry = job, the_plan, config, registry
        self.store = store
        self.position = {index: n for n, index in enumerate(job.shards)}
        self.todo: list[tuple[int, int]] = [(self.position[i], i) for i in job.shards]
        heapq.heapify(self.todo)
        self.actors: dict[int, _Actor] = {}
        self.refs: dict[Any, tuple[str, int, int | None]] = {}
        self.finished: dict[int, _Result] = {}
        self.committed: set[int] = set()
        self.attempts: dict[int, int] = {}
        self.retired: list[str] = []  # segments of actors that stopped (attached by others)
        self.closed_writers: list[str] = []
        self.actor_stats: list[dict[str, Any]] = []  # what each closed actor reported
        self.started_actors = 0
        self.deaths = 0
        self.started = time.monotonic()
        self.first_ready_s: float | None = None  # the pool's start: until an actor is set up
        self.run_tag = uuid.uuid4().hex[:8]
        self.env = {k: os.environ[k] for k in config.forward_env if k in os.environ}

    # actors ------------------------------------------------------------------------------------
    def start_actor(self) -> _Actor:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from dualcurate_ray.worker import ShardWorker

        n = self.started_actors
        self.started_actors += 1
        writer = f"{self.job.stage_name}-{self.run_tag}-{n}"
        options: dict[str, Any] = dict(self.plan.actor_options())
        options.update(max_concurrency=self.plan.max_shards_in_flight + 8, max_restarts=0,
                       name=None)
        if self.env:
            options["runtime_env"] = {"env_vars": dict(self.env)}
        pg = None
        if self.plan.uses_placement_group:
            pg = ray.util.placement_group(self.plan.bundles(),
                                          strategy=self.plan.placement_strategy)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)
        remote_cls = ray.remote(ShardWorker)
        handle = remote_cls.options(**options).remote(
            self.job, writer, list(self.retired), self.registry,
            self.plan.max_shards_in_flight, self.config.depth)
        actor = _Actor(n, handle, writer, pg, attached=set(self.retired))
        self.actors[n] = actor
        self.refs[handle.info.remote()] = ("ready", n, None)
        return actor

    def live(self) -> list[_Actor]:
        return [a for a in self.actors.values() if a.alive]

    def _ask(self, actor: _Actor) -> None:
        if actor.alive and actor.ready and not actor.asking and self.todo:
            actor.asking = True
            self.refs[actor.handle.admit.remote()] = ("admit", actor.n, None)

    def _dispatch(self, actor: _Actor) -> None:
        _, index = heapq.heappop(self.todo)
        new = [s for s in self.retired if s not in actor.attached]
        actor.attached.update(new)
        actor.inflight.add(index)
        self.refs[actor.handle.run_shard.remote(index, new)] = ("shard", actor.n, index)

    def _died(self, actor: _Actor, exc: BaseException) -> None:
        import ray

        if not actor.alive:
            return
        actor.alive = False
        self.deaths += 1
        with contextlib.suppress(Exception):
            ray.kill(actor.handle, no_restart=True)
        if actor.pg is not None:
            with contextlib.suppress(Exception):
                ray.util.remove_placement_group(actor.pg)
        if not actor.ready and getattr(exc, "actor_init_failed", False):
            raise RuntimeError(f"stage {self.job.stage_name}: an actor failed while setting "
                               f"the stage up: {exc}") from exc
        for ref, (_, n, _) in list(self.refs.items()):
            if n == actor.n:
                del self.refs[ref]
        self.retired.append(str(segment_dir(self.job.cache) / f"{actor.writer}.jsonl")
                            if self.job.cache else actor.writer)
        for index in sorted(actor.inflight):
            if index in self.finished or index in self.committed:
                continue
            self.attempts[index] = self.attempts.get(index, 0) + 1
            if self.attempts[index] >= self.config.max_attempts:
                raise RuntimeError(
                    f"stage {self.job.stage_name}: shard {index} was lost with its actor "
                    f"{self.attempts[index]} times (last: {exc}); the cluster is losing "
                    f"workers faster than shards finish. Committed shards are kept; rerun "
                    f"to resume")
            heapq.heappush(self.todo, (self.position[index], index))
        actor.inflight.clear()
        budget = self.plan.num_workers * self.config.max_attempts
        if len(self.live()) < self.plan.num_workers and self.started_actors < budget:
            self.start_actor()
        # shards that came back are handed to actors that already hold a place
        for other in self.live():
            while other.reserved and self.todo:
                other.reserved -= 1
                self._dispatch(other)
            self._ask(other)

    # the loop ----------------------------------------------------------------------------------
    def step(self, timeout: float = 2.0) -> None:
        """Wait for one event (an actor ready, admitting, a shard done or lost) and act."""
        import ray
        import ray.exceptions as rex

        if not self.refs:
            if not self.live():
                raise RuntimeError(f"stage {self.job.stage_name}: every actor died and no "
                                   f"replacement could be started; committed shards are "
                                   f"kept, rerun to resume")
            time.sleep(0.05)
            return
        ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if not ready:
            if not any(a.ready for a in self.live()) and \
                    time.monotonic() - self.started > self.config.actor_start_timeout:
                raise RuntimeError(
                    f"stage {self.job.stage_name}: no actor started within "
                    f"{self.config.actor_start_timeout:g} s; each asks for "
                    f"{self.plan.actor_options()} (tensor_parallel_size="
                    f"{self.plan.tensor_parallel_size}) and the cluster has "
                    f"{ray.available_resources()} free. Add nodes or lower the stage's "
                    f"resources in run.executor_options.stages.{self.job.stage_name}")
            return
        ref = ready[0]
        kind, n, index = self.refs.pop(ref)
        actor = self.actors[n]
        try:
            value = ray.get(ref)
        except rex.RayTaskError as exc:  # the stage's own code failed: stop, as locally
            raise exc.as_instanceof_cause() from None
        except _death_errors() as exc:
            self._died(actor, exc)
            return
        if kind == "ready":
            actor.ready = True
            if self.first_ready_s is None:
                self.first_ready_s = time.monotonic() - self.started
            self._ask(actor)
        elif kind == "admit":
            actor.asking = False
            if not value:
                return
            if self.todo:
                self._dispatch(actor)
                self._ask(actor)
            else:
                actor.reserved += 1
        elif kind == "shard":
            assert index is not None
            actor.inflight.discard(index)
            result = _Result(*value)
            if index in self.finished or index in self.committed:
                Path(result.staged).unlink(missing_ok=True)  # done twice: keep the first
            else:
                self.finished[index] = result
            self._ask(actor)

    def commits(self) -> Iterator[ShardDone]:
        for _ in range(self.plan.num_workers):
            self.start_actor()
        for index in self.job.shards:
            while index not in self.finished:
                self.step()
            result = self.finished.pop(index)
            self.store.commit_staged(Path(result.staged), self.job.stage_name, index)
            self.committed.add(index)
            yield ShardDone(index, result.rows_in, result.rows_out, result.failed)

    def shutdown(self, graceful: bool) -> None:
        """Close the actors (teardown, cache segments flushed), kill what does not answer,
        remove placement groups, and drop staged shards nobody will commit."""
        import ray

        closing = {}
        if graceful:
            for actor in self.live():
                closing[actor.handle.close.remote()] = actor
        deadline = time.monotonic() + 60.0
        while closing and time.monotonic() < deadline:
            done, _ = ray.wait(list(closing), num_returns=1,
                               timeout=max(deadline - time.monotonic(), 0.1))
            for ref in done:
                actor = closing.pop(ref)
                with contextlib.suppress(Exception):
                    self.actor_stats.append(ray.get(ref))
                    self.closed_writers.append(actor.writer)
        for actor in self.actors.values():
            with contextlib.suppress(Exception):
                ray.kill(actor.handle, no_restart=True)
            if actor.pg is not None:
                with contextlib.suppress(Exception):
                    ray.util.remove_placement_group(actor.pg)
            actor.alive = False
        for result in self.finished.values():
            Path(result.staged).unlink(missing_ok=True)
        self.finished.clear()

    def dead_writers(self) -> list[str]:
        """Writers whose actors died (their segments are complete: nothing writes them)."""
        return [Path(s).name.removesuffix(".jsonl") for s in self.retired]


class RayExecutor(Executor):
    """Runs each map stage's shards on a Ray actor pool (see the module docstring)."""

    name = "ray"
    Config = RayExecutorConfig
    config: RayExecutorConfig

    def __init__(self, config: StageConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self.startup_s = 0.0
        self.last_pool: _Pool | None = None

    def run_map(self, job: MapJob, stage: MapStage, ctx: StageContext) -> Iterator[ShardDone]:
        import ray

        store = ctx.store
        assert store is not None, "the ray executor needs a context with a run store"
        # actors run in other working directories (and on other nodes): absolute paths, the
        # same on every node of a cluster sharing the run directory
        job = dataclasses.replace(
            job, run_dir=str(Path(job.run_dir).resolve()),
            cache=str(Path(job.cache).resolve()) if job.cache else None)
        self.startup_s = init_ray(self.config)
        cache = ctx.cache
        if cache is not None and job.cache:
            merge_segments(cache)  # what a killed run's actors wrote; main file checkpointed
        the_plan = plan(job, self.config.defaults(), self.config.stages.get(job.stage_name),
                        ray.cluster_resources(), self.config.max_shards_in_flight)
        registry = None
        if ctx.host is not None:
            registry = {kind: dict(classes) for kind, classes in ctx.host.registry.items()
                        if kind != "executor"}
        pool = _Pool(job, the_plan, self.config, registry, store)
        self.last_pool = pool
        graceful = False
        try:
            yield from pool.commits()
            graceful = True
        finally:
            pool.shutdown(graceful)
            if cache is not None and job.cache:
                # only segments nothing can still append to: closed or dead actors'; a
                # killed actor's segment is folded by the next run, when it surely stopped
                merge_segments(cache, [*pool.closed_writers, *pool.dead_writers()])
