"""The run store: a directory with ``manifest.json``, one folder of Parquet shards per stage and
an image store addressed by content hash.

Durability rules: every file becomes visible only by ``os.replace`` of a fully written and
fsynced temporary file in the same folder, so a crash leaves either the old state or the new
one, never half a shard. Temporary files (``.tmp-*``) are ignored and swept on open.

Column deltas: a map stage's shard holds only the row ids and the columns it adds or changes
(a ``list<struct>`` column whose lists keep their lengths, such as ``traces`` given a verdict
per trace, holds only the struct fields that changed), aligned with the kept rows of the
upstream shard it was computed from; the rest is read from the upstream chain, by column, on
read (:meth:`RunStore.read_shard`). Every shard records a content id in its footer, and a
delta shard the id of the upstream shard it was compared with: it is never joined with
another one (:meth:`RunStore.stale_deltas`, and a read refuses).

Derived fields: a trace's ``reasoning`` and ``answer`` are what :func:`dualcurate.formats.split_trace`
reads from its ``text``, so a shard that stores a ``list<struct>`` column with ``text`` stores
them as null where they are exactly that, and a read puts them back (the footer records which
fields and the split rule's version). Each trace text is stored once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dualcurate.errors import StoreError
from dualcurate.formats import SPLIT_VERSION, split_trace
from dualcurate.schema import rows_to_table, type_table

STORE_FORMAT = 2
SHARD_RE = re.compile(r"^shard-(\d{5,})\.parquet$")

#: Parquet footer keys (schema metadata): every shard's content id, and a delta shard's
#: description (its upstream shard, the full schema its rows are read with).
SHARD_ID_KEY = b"dualcurate.shard"
DELTA_KEY = b"dualcurate.delta"
#: the fields a shard stores as null where :func:`split_trace` of the struct's ``text`` gives
#: them: ``{"split": SPLIT_VERSION, "columns": {column: [field, ...]}}``
DERIVED_KEY = b"dualcurate.derived"
_OWN_KEYS = (SHARD_ID_KEY, DELTA_KEY, DERIVED_KEY)
#: struct fields a trace's text determines, by their position in split_trace's result
_DERIVED_FIELDS = {"reasoning": 0, "answer": 1}


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing. An OS error (disk
    full, read-only or vanished directory) becomes a StoreError naming the file; what was
    committed before stays valid."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)  # the rename itself survives a power loss
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StoreError(f"cannot write {path} ({reason}); everything committed before is "
                         f"kept: free disk space or fix the directory, then rerun the same "
                         f"command to resume") from exc
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def _fsync_dir(folder: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk, where the OS allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=False, default=str).encode())


class ImageStore:
    """Images stored once by the sha256 of their bytes, under ``images/ab/<hash>``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._unsynced = 0

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            # No fsync per image (it dominated sources with many images): a process kill
            # never tears a renamed file, and `sync()` flushes them all at once before a
            # shard that references them is committed.
            atomic_write_bytes(target, data, fsync=False)
            self._unsynced += 1
        return digest

    def sync(self) -> None:
        """Make the images written since the last sync durable (one ``os.sync``)."""
        if self._unsynced:
            os.sync()
            self._unsynced = 0

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def get(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"image {digest[:12]}…: not in the image store {self.root}; "
                             f"the run directory is incomplete, rerun the source stage") from None

    def open(self, digest: str):  # -> PIL.Image.Image
        from PIL import Image

        return Image.open(io.BytesIO(self.get(digest)))


class RunLock:
    """An exclusive lock on a run directory (``<run>/.lock``, ``flock``), held while a process
    runs stages into it, so two ``curate run`` on one directory cannot interleave. The file
    holds the holder's pid, host and start time, so the refused process can name them. The
    kernel drops the lock when its holder exits, killed or not: nothing stale to clean up."""

    def __init__(self, root: Path):
        self.path = Path(root) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl
        import socket

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            try:
                holder = json.loads(self.path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                holder = {}
            since = holder.get("started")
            when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
                    if isinstance(since, int | float) else "an unknown time")
            raise StoreError(
                f"run {self.path.parent}: in use by process {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')} (running since {when}). Two processes must not "
                f"write one run directory: wait for that one to finish (or stop it), or give "
                f"this one another --out") from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunStore:
    """One run directory. Create with ``RunStore(path)``; the manifest is created on first use."""

    def __init__(self, root: str | os.PathLike[str], create: bool = True):
        self.root = Path(root)
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                probe = self.root / f".tmp-probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise StoreError(f"out dir {self.root}: cannot write there ({exc.strerror}); "
                                 f"choose another --out or fix its permissions") from None
        elif not (self.root / "manifest.json").exists():
            raise StoreError(f"run {self.root}: no manifest.json there; pass the directory "
                             f"given to `curate run --out`")
        self.images = ImageStore(self.root / "images")
        self.manifest = self._load_manifest()

    def lock(self) -> RunLock:
        """The run directory's lock (acquire it with ``with store.lock():``)."""
        return RunLock(self.root)

    # -- manifest -----------------------------------------------------------------------
    def _load_manifest(self) -> dict[str, Any]:
        path = self.root / "manifest.json"
        if not path.exists():
            return {"store_format": STORE_FORMAT, "status": "new", "recipe": None,
                    "plugins": {}, "stages": [], "created": time.time()}
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"run {self.root}: manifest.json is not valid JSON ({exc}); "
                             f"restore it or start a new run with another --out") from None
        fmt = manifest.get("store_format")
        if fmt != STORE_FORMAT:
            raise StoreError(f"run {self.root}: written by store format {fmt}, this dualcurate "
                             f"reads format {STORE_FORMAT}; start a new run with another --out "
                             f"(or use the dualcurate version that wrote it)")
        return manifest

    def save_manifest(self) -> None:
        atomic_write_json(self.root / "manifest.json", self.manifest)

    def stage_record(self, name: str) -> dict[str, Any]:
        for rec in self.manifest["stages"]:
            if rec["name"] == name:
                return rec
        rec = {"name": name, "plugin": None, "status": "pending", "rows_in": 0,
               "rows_out": 0, "seconds": 0.0}
        self.manifest["stages"].append(rec)
        return rec

    # -- shards -------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def shard_path(self, stage: str, index: int) -> Path:
        return self.stage_dir(stage) / f"shard-{index:05d}.parquet"

    def write_shard(self, stage: str, index: int, rows: list[dict[str, Any]] | pa.Table,
                    types: Mapping[str, pa.DataType] | None = None,
                    base: tuple[str, int] | None = None) -> Path:
        """Write and commit shard ``index`` of ``stage`` at once (``types``, ``base``: as for
        :meth:`stage_shard`)."""
        return self.commit_staged(self.stage_shard(stage, index, rows, types, base), stage,
                                  index)

    def stage_shard(self, stage: str, index: int, rows: list[dict[str, Any]] | pa.Table,
                    types: Mapping[str, pa.DataType] | None = None,
                    base: tuple[str, int] | None = None) -> Path:
        """Write shard ``index`` of ``stage`` durably under a hidden name (``.tmp-staged-*``,
        never read, swept on the next open), to be made visible by :meth:`commit_staged`.
        The streaming executor stages shards as they finish, in any order, and commits them
        in order; staged files left by a kill are swept and recomputed from the cache.
        ``types``: Arrow types of columns beyond core's (the stage's ``column_types``), so a
        column that is all None in this shard keeps its type. ``base``: (upstream stage,
        shard index) for a map stage whose rows are the kept rows of that upstream shard:
        the shard then holds only the ids and the columns that differ from the upstream's
        (a full copy where the rows do not line up)."""
        table = type_table(rows, types) if isinstance(rows, pa.Table) else \
            rows_to_table(rows, types)
        self.images.sync()  # the images a shard references are durable before it is
        delta = self._delta(table, base) if base is not None else None
        if delta is None:
            stored, meta = table, {}
        else:
            stored, description = delta
            meta = {DELTA_KEY: json.dumps(description, sort_keys=True).encode()}
        stored, derived = _derive(stored)
        if derived:
            meta[DERIVED_KEY] = json.dumps({"split": SPLIT_VERSION, "columns": derived},
                                           sort_keys=True).encode()
        meta[SHARD_ID_KEY] = _content_id(stored, meta.get(DELTA_KEY, b"")
                                         + meta.get(DERIVED_KEY, b""))
        stored = stored.replace_schema_metadata({**(stored.schema.metadata or {}), **meta})
        sink = pa.BufferOutputStream()
        pq.write_table(stored, sink, compression="zstd")
        path = self.stage_dir(stage) / f".tmp-staged-{index:05d}-{os.getpid()}.parquet"
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    def _delta(self, table: pa.Table, base: tuple[str, int]
               ) -> tuple[pa.Table, dict[str, Any]] | None:
        """``table`` as a delta over the kept rows of shard ``base``: (what to store, its
        description), or None where the rows do not line up (then it is stored whole)."""
        up_stage, up_index = base
        if "id" not in table.column_names or not self.shard_path(up_stage, up_index).exists():
            return None
        up_schema = self.shard_schema(up_stage, up_index)
        if "id" not in up_schema.names:
            return None
        shared = [c for c in table.column_names if c in up_schema.names]
        upstream = kept(self.read_shard(up_stage, up_index, _with_keep(shared, up_schema)))
        if upstream.num_rows != table.num_rows or not upstream.column("id").equals(
                table.column("id")):
            return None
        names, arrays, partial = ["id"], [table.column("id")], {}
        for field in table.schema:
            if field.name == "id":
                continue
            column = table.column(field.name)
            if field.name in upstream.column_names:
                up_field = upstream.schema.field(field.name)
                up_column = upstream.column(field.name)
                if up_field.equals(field) and _same(up_column, column):
                    continue  # read from upstream
                fields = _changed_fields(up_field, up_column, field, column)
                if fields is not None:
                    partial[field.name] = fields
                    column = _narrow(column, fields)
            names.append(field.name)
            arrays.append(column)
        description = {"stage": up_stage, "index": up_index,
                       "shard": self.shard_id(up_stage, up_index),
                       "schema": base64.b64encode(_as_read(table).serialize().to_pybytes())
                       .decode(),
                       "partial": partial}
        return pa.Table.from_arrays(arrays, names=names), description

    def commit_staged(self, staged: Path, stage: str, index: int) -> Path:
        """Make a staged shard visible as shard ``index`` (one atomic rename)."""
        path = self.shard_path(stage, index)
        try:
            os.replace(staged, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StoreError(f"cannot commit {path} ({reason}); everything committed before "
                             f"is kept: fix the directory, then rerun the same command to "
                             f"resume") from exc
        return path

    def finished_shards(self, stage: str) -> list[int]:
        folder = self.stage_dir(stage)
        if not folder.exists():
            return []
        found = []
        for entry in folder.iterdir():
            m = SHARD_RE.match(entry.name)
            if m:
                found.append(int(m.group(1)))
        return sorted(found)

    def sweep_temporary(self, stage: str) -> None:
        """Delete what a killed run left half-written or staged (``.tmp-*``) in a stage's
        folder: never visible, so safe to drop. Only the process that runs the stage calls
        this, before it writes: a reader must never sweep a writer's files."""
        folder = self.stage_dir(stage)
        if not folder.exists():
            return
        for entry in folder.iterdir():
            if entry.name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    entry.unlink()

    def _footer(self, stage: str, index: int) -> tuple[pq.ParquetFile, dict[bytes, bytes]]:
        path = self.shard_path(stage, index)
        try:
            handle = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StoreError(f"shard {path}: unreadable ({exc}); delete it and rerun, the "
                             f"stage recomputes it") from None
        return handle, dict(handle.schema_arrow.metadata or {})

    def shard_id(self, stage: str, index: int) -> str:
        """The content id shard ``index`` of ``stage`` records in its footer."""
        return self._footer(stage, index)[1].get(SHARD_ID_KEY, b"").decode()

    def shard_base(self, stage: str, index: int) -> tuple[str, int] | None:
        """(upstream stage, shard) a delta shard reads its other columns from; None for a
        shard stored whole."""
        raw = self._footer(stage, index)[1].get(DELTA_KEY)
        if raw is None:
            return None
        desc = json.loads(raw)
        return desc["stage"], int(desc["index"])

    def shard_schema(self, stage: str, index: int) -> pa.Schema:
        """The schema of the rows shard ``index`` of ``stage`` reads as (a delta shard's
        full schema, not only the columns it stores)."""
        handle, meta = self._footer(stage, index)
        raw = meta.get(DELTA_KEY)
        if raw is None:
            return _strip(handle.schema_arrow)
        return _description_schema(json.loads(raw))

    def stale_deltas(self, stage: str) -> list[int]:
        """Committed delta shards of ``stage`` whose upstream shard is missing or is not the
        one they were computed from (its content id differs): they must be recomputed."""
        stale = []
        for i in self.finished_shards(stage):
            raw = self._footer(stage, i)[1].get(DELTA_KEY)
            if raw is None:
                continue
            desc = json.loads(raw)
            if not self._base_matches(desc):
                stale.append(i)
        return stale

    def _base_matches(self, desc: dict[str, Any]) -> bool:
        up_stage, up_index = desc["stage"], int(desc["index"])
        if not self.shard_path(up_stage, up_index).exists():
            return False
        return self.shard_id(up_stage, up_index) == desc["shard"]

    def read_shard(self, stage: str, index: int, columns: list[str] | None = None) -> pa.Table:
        """Shard ``index`` of ``stage`` as it reads: every column (or ``columns``, which must
        be among them, in that order), a delta shard's other columns read from its upstream
        chain."""
        handle, meta = self._footer(stage, index)
        path = self.shard_path(stage, index)
        try:
            raw = meta.get(DELTA_KEY)
            if raw is None:
                table = self._restored(stage, index, handle.read(columns=columns), meta)
                if columns is not None:
                    table = table.select(columns)
                return table.replace_schema_metadata(_strip_meta(table.schema.metadata))
            return self._read_delta(stage, index, handle, json.loads(raw), columns, meta)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StoreError(f"shard {path}: unreadable ({exc}); delete it and rerun, the "
                             f"stage recomputes it") from None

    def _restored(self, stage: str, index: int, table: pa.Table,
                  meta: Mapping[bytes, bytes]) -> pa.Table:
        """``table`` (read from shard ``index`` of ``stage``) with its derived fields put
        back."""
        raw = meta.get(DERIVED_KEY)
        if raw is None:
            return table
        spec = json.loads(raw)
        if spec.get("split") != SPLIT_VERSION:
            raise StoreError(
                f"shard {self.shard_path(stage, index)}: stores traces split by rule "
                f"{spec.get('split')}, this dualcurate splits them by rule {SPLIT_VERSION}; "
                f"rerun the stage into a new --out (or use the version that wrote it)")
        for name, fields in spec["columns"].items():
            if name in table.column_names:
                position = table.column_names.index(name)
                table = table.set_column(position, table.schema.field(name),
                                         _restore(table.column(name), fields))
        return table

    def _read_delta(self, stage: str, index: int, handle: pq.ParquetFile,
                    desc: dict[str, Any], columns: list[str] | None,
                    meta: Mapping[bytes, bytes]) -> pa.Table:
        schema = _description_schema(desc)
        want = list(schema.names) if columns is None else list(columns)
        missing = [c for c in want if c not in schema.names]
        if missing:
            raise KeyError(f"shard {self.shard_path(stage, index)}: no column(s) {missing}")
        stored = set(handle.schema_arrow.names)
        partial: dict[str, list[str]] = desc.get("partial", {})
        own = self._restored(stage, index, handle.read(columns=[c for c in want if c in stored]),
                             meta)
        from_base = [c for c in want if c not in stored or c in partial]
        up: pa.Table | None = None
        if from_base:
            if not self._base_matches(desc):
                raise StoreError(
                    f"shard {self.shard_path(stage, index)}: computed from upstream shard "
                    f"{desc['stage']}/{int(desc['index']):05d}, which has been rewritten or "
                    f"removed since; rerun the same command (the stage recomputes it)")
            up_schema = self.shard_schema(desc["stage"], int(desc["index"]))
            up = kept(self.read_shard(desc["stage"], int(desc["index"]),
                                      _with_keep(from_base, up_schema)))
            if up.num_rows != handle.metadata.num_rows:
                raise StoreError(f"shard {self.shard_path(stage, index)}: holds "
                                 f"{handle.metadata.num_rows} rows, its upstream's kept rows "
                                 f"are {up.num_rows}; delete it and rerun")
        arrays = []
        for name in want:
            field = schema.field(name)
            if name in partial:
                assert up is not None
                arrays.append(_widen(up.column(name), own.column(name), field.type))
            elif name in stored:
                arrays.append(own.column(name))
            else:
                assert up is not None
                arrays.append(up.column(name))
        fields = [schema.field(c) for c in want]
        if not arrays:
            return pa.Table.from_batches([], schema=pa.schema(fields, metadata=schema.metadata))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=schema.metadata))

    def shard_files(self, stage: str) -> list[Path]:
        """The committed shard files of ``stage``. A map stage's file may hold only some of
        its columns: read rows with :meth:`read_shard` / :meth:`shard_schema`."""
        return [self.shard_path(stage, i) for i in self.finished_shards(stage)]

    def iter_tables(self, stage: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Each committed shard of ``stage`` as :meth:`read_shard` reads it, in order."""
        for i in self.finished_shards(stage):
            yield self.read_shard(stage, i, columns)

    def stage_schema(self, stage: str) -> pa.Schema | None:
        """One schema for every committed shard of ``stage`` (unified; None without one)."""
        schemas = [self.shard_schema(stage, i) for i in self.finished_shards(stage)]
        return pa.unify_schemas(schemas, promote_options="permissive") if schemas else None

    def count_rows(self, stage: str) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.shard_files(stage))

    def dataset(self, stage: str):  # -> datasets.Dataset
        """The stage's rows as a ``datasets.Dataset`` (empty if none)."""
        import datasets

        tables = list(self.iter_tables(stage))
        if not tables:
            return datasets.Dataset(pa.table({}))
        return datasets.Dataset(pa.concat_tables(tables, promote_options="permissive"))

    def clear_stage(self, stage: str) -> None:
        """Hide a stage's shards (its inputs changed): moved to ``<stage>.stale-<time>``."""
        folder = self.stage_dir(stage)
        if folder.exists():
            os.replace(folder, self.root / f".stale-{stage}-{int(time.time() * 1000)}")
            _fsync_dir(self.root)

    def remove_shards(self, stage: str) -> None:
        """Delete a stage's shards (not its artifacts) before a whole-dataset stage rewrites
        them."""
        for path in self.shard_files(stage):
            path.unlink()
        _fsync_dir(self.stage_dir(stage))

    def artifacts_dir(self, stage: str) -> Path:
        path = self.stage_dir(stage) / "artifacts"
        path.mkdir(parents=True, exist_ok=True)
        return path


def kept(table: pa.Table) -> pa.Table:
    """Rows a previous filter kept (``keep`` missing or not False)."""
    if "keep" not in table.column_names:
        return table
    return table.filter(pc.fill_null(table.column("keep"), True))


def _with_keep(columns: list[str], schema: pa.Schema) -> list[str]:
    """``columns`` plus ``keep`` where the shard has it (to select its kept rows)."""
    return [*columns, "keep"] if "keep" in schema.names and "keep" not in columns else columns


def _strip_meta(meta: Mapping[bytes, bytes] | None) -> dict[bytes, bytes] | None:
    rest = {k: v for k, v in (meta or {}).items() if k not in _OWN_KEYS}
    return rest or None


def _strip(schema: pa.Schema) -> pa.Schema:
    return schema.remove_metadata().with_metadata(_strip_meta(schema.metadata)) \
        if _strip_meta(schema.metadata) else schema.remove_metadata()


def _description_schema(desc: dict[str, Any]) -> pa.Schema:
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(desc["schema"])))
    return _strip(schema)


def _as_read(table: pa.Table) -> pa.Schema:
    """The schema a Parquet file of ``table`` reads back with (list items named
    ``element``, ...): what a shard stored whole reads as."""
    sink = pa.BufferOutputStream()
    pq.write_table(table.slice(0, 0), sink)
    return pq.read_schema(pa.BufferReader(sink.getvalue()))


def _content_id(table: pa.Table, extra: bytes) -> bytes:
    """A content id for a shard: sha256 over what it stores (Arrow IPC) and its description."""
    h = hashlib.sha256(extra)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
        writer.write_table(table)
    h.update(sink.getvalue())
    return h.hexdigest()[:32].encode()


def _has_float(dtype: pa.DataType) -> bool:
    if pa.types.is_floating(dtype):
        return True
    return any(_has_float(dtype.field(i).type) for i in range(dtype.num_fields))


def _same(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array) -> bool:
    """Whether two columns hold the same values. Arrow's equality calls 0.0 and -0.0 equal
    and NaN unequal: columns with floats compare by their bytes instead (never a false
    "same": at worst a column is stored that did not need to be)."""
    if len(a) != len(b) or a.type != b.type:
        return False
    if not _has_float(a.type):
        return a.equals(b)
    return _ipc_bytes(a) == _ipc_bytes(b)


def _ipc_bytes(column: pa.ChunkedArray | pa.Array) -> bytes:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    batch = pa.record_batch([array], names=["c"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _list_struct(dtype: pa.DataType) -> bool:
    return pa.types.is_list(dtype) and pa.types.is_struct(dtype.value_type)


def _changed_fields(up_field: pa.Field, up: pa.ChunkedArray, field: pa.Field,
                    column: pa.ChunkedArray) -> list[str] | None:
    """For a ``list<struct>`` column whose lists keep their lengths, nulls and struct
    validity, and whose struct keeps the upstream's fields in order (adding some at the end
    at most): the struct fields that differ (or are new), to store alone. None otherwise."""
    if not (_list_struct(field.type) and _list_struct(up_field.type)) or \
            field.nullable != up_field.nullable:
        return None
    new_struct, old_struct = field.type.value_type, up_field.type.value_type
    if field.type.value_field.nullable != up_field.type.value_field.nullable:
        return None
    old_names = [old_struct.field(i).name for i in range(old_struct.num_fields)]
    new_names = [new_struct.field(i).name for i in range(new_struct.num_fields)]
    if new_names[:len(old_names)] != old_names:
        return None
    a, b = up.combine_chunks(), column.combine_chunks()
    if not a.is_null().equals(b.is_null()) or \
            not pc.list_value_length(a).equals(pc.list_value_length(b)):
        return None
    va, vb = a.flatten(), b.flatten()  # the structs of every list, nulls lists skipped
    if not va.is_null().equals(vb.is_null()):
        return None
    changed = []
    for i, name in enumerate(new_names):
        new_f = new_struct.field(i)
        if name in old_names:
            old_f = old_struct.field(name)
            if old_f.equals(new_f) and _same(va.field(name), vb.field(name)):
                continue
        changed.append(name)
    if not changed or len(changed) == len(new_names):
        return None  # every field changed (or only the column's type): store it whole
    return changed


def _narrow(column: pa.ChunkedArray, fields: list[str]) -> pa.Array:
    """A ``list<struct>`` column reduced to ``fields`` of its struct (same lists, nulls)."""
    array = column.combine_chunks()
    values = array.flatten()
    struct = pa.StructArray.from_arrays([values.field(f) for f in fields], names=fields,
                                        mask=values.is_null())
    return _relist(array, struct)


def _relist(array: pa.ListArray, struct: pa.StructArray,
            dtype: pa.DataType | None = None) -> pa.Array:
    """The lists of ``array`` (lengths, nulls) holding ``struct``'s values instead (typed
    ``dtype`` when given)."""
    offsets = pa.concat_arrays([pa.array([0], pa.int32()),
                                pc.cumulative_sum(pc.list_value_length(array).fill_null(0))
                                .cast(pa.int32())])
    return pa.ListArray.from_arrays(offsets, struct, mask=array.is_null(), type=dtype)


def _derive(table: pa.Table) -> tuple[pa.Table, dict[str, list[str]]]:
    """``table`` with each ``list<struct>`` column's derived fields (``reasoning``,
    ``answer``: strings beside a string ``text``) null where :func:`split_trace` of the text
    gives them, and which fields of which column that was done to. A field holding a null of
    its own (in a struct that is not null) is left as it is: its null would read back as the
    split."""
    derived: dict[str, list[str]] = {}
    for position, field in enumerate(table.schema):
        if not _list_struct(field.type):
            continue
        struct_type = field.type.value_type
        names = [struct_type.field(i).name for i in range(struct_type.num_fields)]
        candidates = [n for n in _DERIVED_FIELDS if n in names
                      and pa.types.is_string(struct_type.field(n).type)]
        if "text" not in names or not pa.types.is_string(struct_type.field("text").type) \
                or not candidates:
            continue
        array = table.column(position).combine_chunks()
        values = array.flatten()
        valid = values.is_valid().to_pylist()
        texts = values.field("text").to_pylist()
        splits = [split_trace(t) if ok and t is not None else None
                  for ok, t in zip(valid, texts, strict=True)]
        children = {n: values.field(n) for n in names}
        done = []
        for name in candidates:
            own = children[name].to_pylist()
            if any(ok and v is None for ok, v in zip(valid, own, strict=True)):
                continue
            at = _DERIVED_FIELDS[name]
            kept_values = [v if s is None or v != s[at] else None
                           for v, s in zip(own, splits, strict=True)]
            children[name] = pa.array(kept_values, struct_type.field(name).type)
            done.append(name)
        if not done:
            continue
        struct = pa.StructArray.from_arrays([children[n] for n in names],
                                            fields=list(struct_type), mask=values.is_null())
        table = table.set_column(position, field, _relist(array, struct, field.type))
        derived[field.name] = done
    return table, derived


def _restore(column: pa.ChunkedArray, fields: list[str]) -> pa.Array:
    """A stored ``list<struct>`` column with its derived ``fields`` put back from the
    struct's ``text`` (where they are null in a struct that is not)."""
    array = column.combine_chunks()
    values = array.flatten()
    struct_type = array.type.value_type
    names = [struct_type.field(i).name for i in range(struct_type.num_fields)]
    present = [f for f in fields if f in names]
    if "text" not in names or not present:
        return array
    valid = values.is_valid().to_pylist()
    texts = values.field("text").to_pylist()
    children = {n: values.field(n) for n in names}
    splits: list[tuple[str, str] | None] | None = None
    for name in present:
        own = children[name].to_pylist()
        if not any(ok and v is None for ok, v in zip(valid, own, strict=True)):
            continue
        if splits is None:
            splits = [split_trace(t) if ok and t is not None else None
                      for ok, t in zip(valid, texts, strict=True)]
        at = _DERIVED_FIELDS[name]
        children[name] = pa.array([s[at] if v is None and s is not None else v
                                   for v, s in zip(own, splits, strict=True)],
                                  struct_type.field(name).type)
    struct = pa.StructArray.from_arrays([children[n] for n in names], fields=list(struct_type),
                                        mask=values.is_null())
    return _relist(array, struct, array.type)


def _widen(up: pa.ChunkedArray, own: pa.ChunkedArray, dtype: pa.DataType) -> pa.Array:
    """The ``list<struct>`` column ``dtype`` from upstream's lists and the fields a delta
    stores for them (its own where it has them)."""
    a, b = up.combine_chunks(), own.combine_chunks()
    va, vb = a.flatten(), b.flatten()
    struct_type = dtype.value_type
    names = [struct_type.field(i).name for i in range(struct_type.num_fields)]
    own_names = {vb.type.field(i).name for i in range(vb.type.num_fields)}
    children = [vb.field(n) if n in own_names else va.field(n) for n in names]
    struct = pa.StructArray.from_arrays(children, fields=list(struct_type),
                                        mask=vb.is_null())
    return _relist(b, struct, dtype)


_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
IMAGE_MIME = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "bmp": "image/bmp",
              "tiff": "image/tiff", "webp": "image/webp"}


def image_extension(head: bytes) -> str:
    """The file extension for image bytes (from their first 16 bytes); ``bin`` if unknown."""
    for magic, ext in _IMAGE_MAGIC:
        if head.startswith(magic):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return "bin"


def image_mime(data: bytes, default: str = "application/octet-stream") -> str:
    """The MIME type of image bytes by their magic number."""
    return IMAGE_MIME.get(image_extension(data[:16]), default)


def image_data_url(data: bytes, default: str = "application/octet-stream") -> str:
    """A ``data:`` URL holding image bytes (reports, chat APIs)."""
    return f"data:{image_mime(data, default)};base64,{base64.b64encode(data).decode('ascii')}"
