"""Executors run a map stage over shards. ``local`` (built in) runs them in this process, one
shard at a time, with the stage set up once; other executors (ray) register the same way."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from dualcurate.stages import Executor, MapStage

if TYPE_CHECKING:
    from dualcurate.context import StageContext
    from dualcurate.store import RunStore


def kept(table: pa.Table) -> pa.Table:
    """Rows a previous filter kept (``keep`` missing or not False)."""
    if "keep" not in table.column_names:
        return table
    mask = pc.fill_null(table.column("keep"), True)
    return table.filter(mask)


def input_rows(store: RunStore, upstream: str, index: int) -> list[dict[str, Any]]:
    return kept(store.read_shard(upstream, index)).to_pylist()


@dataclass
class ShardDone:
    index: int
    rows_in: int
    rows_out: int


class LocalExecutor(Executor):
    """Runs shards sequentially in-process. Each output shard is committed (atomic rename)
    before the next starts, so a kill loses at most the shard in progress."""

    name = "local"

    def run_shards(self, stage: MapStage, ctx: StageContext, store: RunStore, upstream: str,
                   shards: list[int]) -> Iterator[ShardDone]:
        for index in shards:
            rows = input_rows(store, upstream, index)
            out = stage.process(rows, ctx) if rows else []
            ids_in = [r.get("id") for r in rows]
            ids_out = [r.get("id") for r in out]
            if ids_in != ids_out:
                raise RuntimeError(
                    f"stage {ctx.stage_name} ({type(stage).__name__}): shard {index} returned "
                    f"{len(out)} rows for {len(rows)} input rows or changed their order/ids; a "
                    f"map stage must return one row per input row, in order (use `keep` to drop)")
            store.write_shard(ctx.stage_name, index, out if out else _empty_like(rows))
            yield ShardDone(index, len(rows), len(out))


def _empty_like(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table({"id": pa.array([], pa.string())})
