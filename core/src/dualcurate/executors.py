"""Executors run a map stage over shards. ``local`` (built in) runs them in this process; other
executors (ray) register the same way and implement the same :class:`Executor` contract.

The local executor has two paths:

* A stage that does not generate (rules, filters without a model) runs one shard at a time.
* A stage that generates (``MapStage.generates``) streams: a shard is a unit of commit and of
  resume, not of scheduling. Several shards run at once, each in its own thread, and their
  requests flow into the engine through one window that spans shards (see
  :mod:`dualcurate.window`): the next shard is admitted while the engine holds fewer than
  ``depth × capacity`` unanswered samples, so it never drains while one shard's slowest
  requests finish. Each finished shard is staged on disk at once (memory stays bounded) and
  committed, in order, as soon as every shard before it is. Every answer reaches the request
  cache when it arrives, so a kill loses only the requests in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
from pydantic import Field

from dualcurate.recipe import StageConfig
from dualcurate.stages import Executor, MapJob, MapStage, ShardDone, Source
from dualcurate.store import kept
from dualcurate.window import DEFAULT_DEPTH, GenerationWindow

if TYPE_CHECKING:
    import datasets

    from dualcurate.context import StageContext
    from dualcurate.store import RunStore

__all__ = ["LocalExecutor", "LocalExecutorConfig", "ShardDone", "input_rows", "kept",
           "output_types", "process_shard", "write_dataset", "write_source"]


def input_rows(store: RunStore, upstream: str, index: int) -> list[dict[str, Any]]:
    return kept(store.read_shard(upstream, index)).to_pylist()


def process_shard(stage: MapStage, ctx: StageContext, store: RunStore, upstream: str,
                  index: int) -> tuple[int, list[dict[str, Any]]]:
    """Run ``stage`` over upstream shard ``index``: (rows in, rows out), with the map-stage
    rule checked (one row out per row in, same ids, same order)."""
    rows = input_rows(store, upstream, index)
    out = stage.process(rows, ctx) if rows else []
    ids_in = [r.get("id") for r in rows]
    ids_out = [r.get("id") for r in out]
    if ids_in != ids_out:
        raise RuntimeError(
            f"stage {ctx.stage_name} ({type(stage).__name__}): shard {index} returned "
            f"{len(out)} rows for {len(rows)} input rows or changed their order/ids; a "
            f"map stage must return one row per input row, in order (use `keep` to drop)")
    return len(rows), out


def output_types(stage: MapStage, store: RunStore, upstream: str,
                 index: int) -> dict[str, pa.DataType]:
    """The Arrow types a map stage's output shard is written with: the upstream shard's
    (columns carried through keep their type even where this shard's values are all None)
    and the stage's own ``column_types``."""
    from dualcurate.schema import schema_types

    carried = schema_types(store.shard_schema(upstream, index))
    return {**carried, **type(stage).column_types}


def empty_shard() -> pa.Table:
    """The table a shard that kept no rows is written as (every executor's)."""
    return pa.table({"id": pa.array([], pa.string())})


class LocalExecutorConfig(StageConfig):
    """``max_shards_in_flight``: the most shards a generating stage works on at once (each
    holds its rows in memory until it is staged on disk); ``depth``: how many times the
    engine's capacity is kept handed to it. Neither changes any output."""

    max_shards_in_flight: int = Field(64, ge=1)
    depth: int = Field(DEFAULT_DEPTH, ge=1)

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"max_shards_in_flight", "depth"})


class LocalExecutor(Executor):
    """Runs shards in this process, the stage set up once."""

    name = "local"
    Config = LocalExecutorConfig
    config: LocalExecutorConfig

    def run_map(self, job: MapJob, stage: MapStage, ctx: StageContext) -> Iterator[ShardDone]:
        store = ctx.store
        assert store is not None, "the local executor needs a context with a run store"
        stage.setup(ctx)
        try:
            if stage.generates:
                yield from self._stream(job, stage, ctx, store)
            else:
                yield from self._one_at_a_time(job, stage, ctx, store)
        finally:
            stage.teardown()

    def _one_at_a_time(self, job: MapJob, stage: MapStage, ctx: StageContext,
                       store: RunStore) -> Iterator[ShardDone]:
        for index in job.shards:
            failed = ctx.stats.failed
            rows_in, out = process_shard(stage, ctx, store, job.upstream, index)
            store.write_shard(job.stage_name, index, out if out else empty_shard(),
                              output_types(stage, store, job.upstream, index),
                              base=(job.upstream, index))
            yield ShardDone(index, rows_in, len(out), ctx.stats.failed - failed)

    def _stream(self, job: MapJob, stage: MapStage, ctx: StageContext,
                store: RunStore) -> Iterator[ShardDone]:
        run = _StreamingRun(job, stage, ctx, store, self.config)
        try:
            yield from run.commits()
        finally:
            if run.stop():
                # Stopped with shards still running (a failure, Ctrl-C): close the engines so
                # their requests in flight are cancelled and the threads end, then sweep what
                # they staged. What was answered is in the cache already.
                stage.teardown()
                ctx.close()
                run.join(timeout=30.0)


class _Finished:
    """A shard whose rows are staged on disk, waiting for its turn to be committed."""

    def __init__(self, staged: Path, rows_in: int, rows_out: int, failed: int):
        self.staged, self.rows_in, self.rows_out, self.failed = staged, rows_in, rows_out, failed


class _StreamingRun:
    """The shards of one generating stage in flight: admission through the window, one
    daemon thread per shard (a stuck engine call never blocks interpreter exit), in-order
    commits."""

    def __init__(self, job: MapJob, stage: MapStage, ctx: StageContext, store: RunStore,
                 config: LocalExecutorConfig):
        self.job, self.stage, self.ctx, self.store = job, stage, ctx, store
        self.limit = config.max_shards_in_flight
        self.window = GenerationWindow(depth=config.depth)
        self.cond = self.window.condition
        self.running: set[int] = set()
        self.finished: dict[int, _Finished | BaseException] = {}
        self.threads: list[threading.Thread] = []
        self.stopped = False

    def commits(self) -> Iterator[ShardDone]:
        order = list(self.job.shards)
        todo = iter(order)
        next_up: int | None = next(todo, None)
        for index in order:
            with self.cond:
                while True:
                    # admit while the engine is hungry and no shard is still preparing its
                    # first requests (its demand is not counted yet); the first shard always
                    while next_up is not None and self.window.may_admit(self.running, 0,
                                                                        self.limit):
                        self._start(next_up)
                        next_up = next(todo, None)
                    if index in self.finished:
                        break
                    failure = next((f for f in self.finished.values()
                                    if isinstance(f, BaseException)), None)
                    if failure is not None:  # fail now, not when its turn to commit comes
                        raise failure
                    self.cond.wait(timeout=5.0)
                done = self.finished.pop(index)
            if isinstance(done, BaseException):
                raise done
            self.store.commit_staged(done.staged, self.job.stage_name, index)
            yield ShardDone(index, done.rows_in, done.rows_out, done.failed)

    def _start(self, index: int) -> None:
        self.running.add(index)
        thread = threading.Thread(target=self._work, args=(index,), daemon=True,
                                  name=f"dualcurate-{self.job.stage_name}-shard-{index}")
        self.threads.append(thread)
        thread.start()

    def _work(self, index: int) -> None:
        outcome: _Finished | BaseException | None = None
        try:
            shard_ctx = self.ctx.for_shard(index, self.window)
            rows_in, out = process_shard(self.stage, shard_ctx, self.store, self.job.upstream,
                                         index)
            if not self.stopped:
                staged = self.store.stage_shard(self.job.stage_name, index,
                                                out if out else empty_shard(),
                                                output_types(self.stage, self.store,
                                                             self.job.upstream, index),
                                                base=(self.job.upstream, index))
                outcome = _Finished(staged, rows_in, len(out), shard_ctx.stats.failed)
        except BaseException as exc:  # handed to the committing thread, raised there
            outcome = exc
        with self.cond:
            self.running.discard(index)
            self.window.engaged.discard(index)
            if self.stopped:  # nobody commits any more: drop what was staged
                if isinstance(outcome, _Finished):
                    outcome.staged.unlink(missing_ok=True)
            elif outcome is not None:
                self.finished[index] = outcome
            self.cond.notify_all()

    def stop(self) -> bool:
        """The consumer stopped (done, failed or interrupted): nothing more is sent or
        committed. True when shards were still running."""
        with self.cond:
            self.stopped = True
            self.window.cancelled = True  # shards still running send nothing more
            running = bool(self.running)
        self._sweep()
        return running

    def join(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for the shard threads to end, then drop what they
        staged: never visible, and recomputed from the cache on the next run."""
        for thread in list(self.threads):
            thread.join(timeout=max(timeout, 0.0))
        self._sweep()

    def _sweep(self) -> None:
        with self.cond:
            leftovers = [f for f in self.finished.values() if isinstance(f, _Finished)]
            self.finished.clear()
        for item in leftovers:
            item.staged.unlink(missing_ok=True)


# Cutting rows into shards: sources and whole-dataset stages -----------------------------------
#: called with the shard indices a stage is about to (re)write, before it writes them
BeforeWrite = Callable[[list[int]], None]


def write_source(stage: Source, ctx: StageContext, store: RunStore, size: int,
                 before_write: BeforeWrite) -> tuple[int, int]:
    """Read ``stage`` into shards of ``size`` rows; shards already committed are not written
    again (a resumed source reads from the start and writes only what is missing). Returns
    (rows read, rows yielded): rows read counts the source's own drops (bad records,
    duplicates) when it reports them as ``rows_read``."""
    done = set(store.finished_shards(ctx.stage_name))
    column_types = type(stage).column_types
    total = 0
    ctx.progress.start(0, unit="rows")
    stage.setup(ctx)
    try:
        for index, rows in enumerate(_cut(stage.read(ctx), size)):
            if index not in done:
                before_write([index])
                store.write_shard(ctx.stage_name, index, rows, column_types)
            total += len(rows)
            ctx.progress.advance(len(rows))
    finally:
        stage.teardown()
    read = getattr(stage, "rows_read", None)
    return (read if isinstance(read, int) and read >= total else total), total


def _cut(batches: Iterable[Iterable[dict[str, Any]]], size: int) -> Iterator[list[dict[str, Any]]]:
    buffer: list[dict[str, Any]] = []
    for batch in batches:
        for row in batch:
            buffer.append(row)
            if len(buffer) == size:
                yield buffer
                buffer = []
    if buffer:
        yield buffer


def write_dataset(store: RunStore, name: str, dataset: datasets.Dataset, size: int,
                  column_types: dict[str, Any], before_write: BeforeWrite) -> None:
    """A whole-dataset stage's result, replacing its previous shards, in shards of ``size``
    rows (one empty shard for an empty result)."""
    count = -(-max(len(dataset), 1) // size)
    before_write(sorted(set(range(count)) | set(store.finished_shards(name))))
    store.remove_shards(name)
    arrow_view = dataset.with_format("arrow")
    for i, start in enumerate(range(0, max(len(dataset), 1), size)):
        store.write_shard(name, i, arrow_view[start:start + size], column_types)
