"""The request cache with many writers on many nodes: one append-only segment per writer,
merged on read.

SQLite is right for one process on one machine (the ``local`` executor), and wrong for many
processes on many machines sharing a network filesystem: its locks and its WAL index
(shared memory) do not work across hosts on NFS or Lustre. So a distributed executor gives
each of its workers a :class:`SegmentedCache`:

* writes go to the worker's own segment, ``<cache>.d/<writer>.jsonl``: one JSON object per
  line, appended with one ``write`` per batch by exactly one process, never rewritten. A
  kill leaves at most a torn last line, which readers skip (a miss, asked again).
* reads look in the worker's own segment, in segments it was told to attach (those of
  workers that died: what they answered is not asked again), and in the main SQLite file,
  opened read-only and ``immutable`` (no locks, no WAL index: safe on any filesystem,
  because nobody writes the main file while workers run, see :func:`merge_segments`).
* the driver (one process) folds segments into the main file with :func:`merge_segments`
  when no worker is writing: before a stage's workers start (what a killed run left) and
  after they stopped. A writer holds an exclusive ``flock`` on its segment while it is open
  (released by the kernel when it dies; on NFS v4 when its lease expires), and a segment
  whose lock is held is skipped, so folding never races a live writer, even one of another
  run sharing the cache. Folding is idempotent (``INSERT OR REPLACE``), so a segment merged
  twice is harmless; it is deleted only after its rows are committed.

Keys and values are the same as :class:`dualcurate.cache.RequestCache`'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dualcurate.cache import RequestCache, _Codec, encode_key, read_outputs
from dualcurate.fingerprint import canonical_json

__all__ = ["SegmentedCache", "checkpoint", "merge_segments", "read_segment", "segment_dir"]

SEGMENT_SUFFIX = ".jsonl"


def segment_dir(cache_path: str | os.PathLike[str]) -> Path:
    """The folder of the writers' segments of the cache file ``cache_path``."""
    return Path(f"{os.fspath(cache_path)}.d")


def read_segment(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(offset, record) for every complete line of a segment; a torn or unreadable line (a
    writer killed mid-write) is skipped."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        offset = 0
        for line in fh:
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                break  # the tail a killed writer left
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict) and "k" in record and "t" in record:
                yield start, record


def checkpoint(cache_path: str | os.PathLike[str]) -> None:
    """Move everything the WAL holds into the main file, so that readers opening it
    ``immutable`` (without the WAL) see all of it. Call it from the host that writes it."""
    path = Path(cache_path)
    if not path.exists():
        return
    db = sqlite3.connect(str(path), timeout=60)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def merge_segments(cache: RequestCache, writers: Iterable[str] | None = None) -> int:
    """Fold segments into ``cache`` (the main file; this process must be its only writer),
    delete them, and checkpoint the main file. Segments whose writer is still running (its
    lock is held) are left for another time. ``writers``: only these writers' segments
    (default: every segment). Returns the number of records folded."""
    folder = segment_dir(cache.path)
    if not folder.is_dir():
        checkpoint(cache.path)
        return 0
    if writers is None:
        paths = sorted(folder.glob(f"*{SEGMENT_SUFFIX}"))
    else:
        paths = [folder / f"{w}{SEGMENT_SUFFIX}" for w in writers]
    folded = 0
    for path in paths:
        lock = _try_lock(path)
        if lock is None:
            continue  # missing, or its writer is still running: folded another time
        try:
            folded += _fold(cache, path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        finally:
            os.close(lock)
    checkpoint(cache.path)
    return folded


def _try_lock(path: Path) -> int | None:
    """An fd holding ``path``'s exclusive lock, or None (no such file, or locked)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _fold(cache: RequestCache, path: Path) -> int:
    folded = 0
    outputs: list[tuple[str, Mapping[str, Any]]] = []
    for _, record in read_segment(path):
        kind = record["t"]
        if kind == "o":
            outputs.append((record["k"], record["v"]))
        elif kind == "f":
            cache.record_failure(record["k"], str(record.get("e", "")))
        elif kind == "d":
            cache.put_derived(record["k"], record["v"])
        folded += 1
        if len(outputs) >= 2000:
            cache.put_many(outputs)
            outputs = []
    cache.put_many(outputs)
    return folded


class _SegmentIndex:
    """key -> (offset, length) of the last output (or derived value) in one segment file."""

    def __init__(self, path: Path):
        self.path = path
        self.outputs: dict[str, tuple[int, int]] = {}
        self.derived: dict[str, tuple[int, int]] = {}
        self._fh: Any = None

    def scan(self) -> _SegmentIndex:
        for offset, record in read_segment(self.path):
            target = self.outputs if record["t"] == "o" else \
                self.derived if record["t"] == "d" else None
            if target is not None:
                target[record["k"]] = (offset, -1)
        return self

    def add(self, kind: str, key: str, offset: int, length: int) -> None:
        (self.outputs if kind == "o" else self.derived)[key] = (offset, length)

    def read(self, where: tuple[int, int]) -> Any:
        if self._fh is None:
            self._fh = open(self.path, "rb")
        offset, length = where
        self._fh.seek(offset)
        line = self._fh.read(length) if length >= 0 else self._fh.readline()
        try:
            return json.loads(line)["v"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            return None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class SegmentedCache:
    """A worker's view of the request cache: the same methods as
    :class:`~dualcurate.cache.RequestCache` (``get_many``, ``put_many``, ``record_failure``,
    ``get_derived``, ``put_derived``, ``close``), writing only to its own segment.

    ``cache_path``: the main cache file (read-only here; may not exist yet). ``writer``: a
    name unique to this worker (becomes the segment's file name). ``attach``: segments of
    writers that have stopped, read too."""

    def __init__(self, cache_path: str | os.PathLike[str], writer: str,
                 attach: Iterable[str | os.PathLike[str]] = ()):
        self.path = Path(cache_path)
        self.writer = writer
        self.segment = segment_dir(self.path) / f"{writer}{SEGMENT_SUFFIX}"
        self.segment.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = os.open(self.segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_EX)  # "still writing": merge_segments skips it
        self._size = os.fstat(self._fd).st_size
        self._own = _SegmentIndex(self.segment)
        self._attached: dict[Path, _SegmentIndex] = {}
        self._main: sqlite3.Connection | None = None
        self._codec = _Codec()
        if self.path.exists():
            # immutable: no locks, no WAL, no shared memory; correct because the main file
            # does not change while workers run (the driver merges only between stages)
            self._main = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True,
                                         check_same_thread=False)
            self._codec.load(self._main)
        self.hits = 0
        self.misses = 0
        self.attach(attach)

    def attach(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Also read these (stopped writers') segments."""
        for raw in paths:
            path = Path(raw)
            if path == self.segment:
                continue
            with self._lock:
                if path not in self._attached:
                    self._attached[path] = _SegmentIndex(path).scan()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
            self._own.close()
            for index in self._attached.values():
                index.close()
            if self._main is not None:
                self._main.close()
                self._main = None

    # writing ----------------------------------------------------------------------------------
    def _append(self, records: list[tuple[str, str, dict[str, Any]]]) -> None:
        """One write of every record (kind, key, json object): a kill tears at most the
        tail, which readers skip."""
        if not records:
            return
        lines = [(kind, key, (canonical_json(obj) + "\n").encode()) for kind, key, obj in records]
        blob = b"".join(line for _, _, line in lines)
        with self._lock:
            if self._fd < 0:
                raise RuntimeError(f"request cache segment {self.segment}: already closed")
            view = memoryview(blob)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            offset = self._size
            for kind, key, line in lines:
                if kind in ("o", "d"):
                    self._own.add(kind, key, offset, len(line))
                offset += len(line)
            self._size = offset

    def put_many(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        self._append([("o", k, {"t": "o", "k": k, "v": dict(v)}) for k, v in items])

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        self.put_many([(key, value)])

    def record_failure(self, key: str, error: str) -> None:
        self._append([("f", key, {"t": "f", "k": key, "e": error, "c": time.time()})])

    def put_derived(self, key: str, value: Any) -> None:
        self._append([("d", key, {"t": "d", "k": key, "v": value})])

    # reading ----------------------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            rest = []
            for key in keys:
                value = self._lookup("outputs", key)
                if value is not None:
                    found[key] = value
                else:
                    rest.append(key)
            if self._main is not None and rest:
                with contextlib.suppress(sqlite3.OperationalError):  # no table yet
                    found.update(read_outputs(self._main, self._codec, rest))
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def _lookup(self, table: str, key: str) -> Any:
        for index in (self._own, *self._attached.values()):
            where = getattr(index, table).get(key)
            if where is not None:
                value = index.read(where)
                if value is not None:
                    return value
        return None

    def get_derived(self, key: str) -> Any | None:
        with self._lock:
            value = self._lookup("derived", key)
            if value is not None or self._main is None:
                return value
            try:
                row = self._main.execute("SELECT value FROM derived WHERE key = ?",
                                         (encode_key(key),)).fetchone()
            except sqlite3.OperationalError:
                return None
        return None if row is None else json.loads(row[0])

    def failures(self) -> list[tuple[str, str]]:
        """This writer's failures (the main file's are the driver's to report)."""
        return [(r["k"], str(r.get("e", ""))) for _, r in read_segment(self.segment)
                if r["t"] == "f"]

    def count(self) -> int:
        """Outputs in this writer's segment."""
        return len(self._own.outputs)
