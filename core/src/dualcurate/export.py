"""Export a stage's rows as Parquet, JSON lines or a ``datasets.save_to_disk`` folder."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from dualcurate.errors import DualcurateError
from dualcurate.executors import kept
from dualcurate.store import RunStore


def export_stage(run: str | Path, stage: str, to: str | Path, fmt: str,
                 all_rows: bool = False) -> int:
    """Write ``stage``'s rows (kept ones unless ``all_rows``) to ``to``; return the count."""
    store = RunStore(run, create=False)
    shards = store.finished_shards(stage)
    if not shards:
        names = ", ".join(s["name"] for s in store.manifest["stages"]) or "(none)"
        raise DualcurateError(f"run {run}: stage {stage!r} has no rows; stages: {names}")
    target = Path(to)
    target.mkdir(parents=True, exist_ok=True)
    n = 0
    if fmt == "parquet":
        for i in shards:
            table = store.read_shard(stage, i)
            table = table if all_rows else kept(table)
            pq.write_table(table, target / f"{stage}-{i:05d}.parquet")
            n += table.num_rows
    elif fmt == "jsonl":
        with open(target / f"{stage}.jsonl", "w", encoding="utf-8") as fh:
            for i in shards:
                table = store.read_shard(stage, i)
                for row in (table if all_rows else kept(table)).to_pylist():
                    fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                    n += 1
    elif fmt == "hf":
        import datasets
        import pyarrow as pa

        tables = [store.read_shard(stage, i) for i in shards]
        table = pa.concat_tables(tables, promote_options="permissive")
        table = table if all_rows else kept(table)
        datasets.Dataset(table).save_to_disk(str(target))
        n = table.num_rows
    else:
        raise DualcurateError(f"--format {fmt!r}: use parquet, jsonl or hf")
    return n
