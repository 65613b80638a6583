"""The run store: a directory with ``manifest.json``, one folder of Parquet shards per stage and
an image store addressed by content hash.

Durability rules: every file becomes visible only by ``os.replace`` of a fully written and
fsynced temporary file in the same folder, so a crash leaves either the old state or the new
one, never half a shard. Temporary files (``.tmp-*``) are ignored and swept on open.
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
from dualcurate.schema import rows_to_table, type_table

STORE_FORMAT = 1
SHARD_RE = re.compile(r"^shard-(\d{5,})\.parquet$")


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
                    types: Mapping[str, pa.DataType] | None = None) -> Path:
        """Write and commit shard ``index`` of ``stage`` at once (``types``: as for
        :meth:`stage_shard`)."""
        return self.commit_staged(self.stage_shard(stage, index, rows, types), stage, index)

    def stage_shard(self, stage: str, index: int, rows: list[dict[str, Any]] | pa.Table,
                    types: Mapping[str, pa.DataType] | None = None) -> Path:
        """Write shard ``index`` of ``stage`` durably under a hidden name (``.tmp-staged-*``,
        never read, swept on the next open), to be made visible by :meth:`commit_staged`.
        The streaming executor stages shards as they finish, in any order, and commits them
        in order; staged files left by a kill are swept and recomputed from the cache.
        ``types``: Arrow types of columns beyond core's (the stage's ``column_types``), so a
        column that is all None in this shard keeps its type."""
        table = type_table(rows, types) if isinstance(rows, pa.Table) else \
            rows_to_table(rows, types)
        self.images.sync()  # the images a shard references are durable before it is
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        path = self.stage_dir(stage) / f".tmp-staged-{index:05d}-{os.getpid()}.parquet"
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

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

    def read_shard(self, stage: str, index: int) -> pa.Table:
        path = self.shard_path(stage, index)
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StoreError(f"shard {path}: unreadable ({exc}); delete it and rerun, the "
                             f"stage recomputes it") from None

    def shard_files(self, stage: str) -> list[Path]:
        return [self.shard_path(stage, i) for i in self.finished_shards(stage)]

    def iter_tables(self, stage: str) -> Iterator[pa.Table]:
        for i in self.finished_shards(stage):
            yield self.read_shard(stage, i)

    def count_rows(self, stage: str) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.shard_files(stage))

    def dataset(self, stage: str):  # -> datasets.Dataset
        """The stage's rows as a memory-mapped ``datasets.Dataset`` (empty if none)."""
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
