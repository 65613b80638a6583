"""The request-level cache for model calls: an embedded SQLite file.

A key covers everything that changes a model's output: engine, model and revision, endpoint,
the model's content fingerprint (local folders) or resolved commit (hub ids), every engine
option not declared runtime-only, the fully rendered chat messages (system prompt included), image hashes, sampling settings and
the sample index. Dict order never matters (canonical JSON). Failed requests are stored in a
separate table, never as outputs, so the next run retries them. Parsing and verification are
cached under their own keys (``derived``), so a parser change never re-pays generation.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

CACHE_FORMAT = 3  # 2: per-question seeds (seed_for(i, request)); 3: model fingerprints, engine options


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def request_key(*, engine: str, model: str, messages: Sequence[Mapping[str, Any]],
                sampling: Mapping[str, Any], sample_index: int, revision: str | None = None,
                endpoint: str | None = None, image_hashes: Sequence[str] = (),
                extra: Mapping[str, Any] | None = None) -> str:
    """The cache key of one sample of one chat request (sha256 hex)."""
    payload = {
        "v": CACHE_FORMAT,
        "engine": engine,
        "model": model,
        "revision": revision,
        "endpoint": endpoint,
        "messages": list(messages),
        "images": list(image_hashes),
        "sampling": dict(sampling),
        "sample_index": sample_index,
        "extra": dict(extra or {}),
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def derived_key(kind: str, version: str, inputs: Mapping[str, Any]) -> str:
    """Key for a parse/verify result: its own kind and version plus its inputs."""
    return hashlib.sha256(canonical_json({"kind": kind, "version": version,
                                          "inputs": dict(inputs)}).encode()).hexdigest()


class RequestCache:
    """Thread-safe SQLite cache. Writes are committed at once (WAL), so a kill loses at most
    the request in flight."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, value TEXT NOT NULL,
                                                created REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS failures (key TEXT NOT NULL, error TEXT NOT NULL,
                                                 created REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS derived (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            """
        )
        self.hits = 0
        self.misses = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # outputs ------------------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                q = f"SELECT key, value FROM outputs WHERE key IN ({','.join('?' * len(chunk))})"
                for key, value in self._db.execute(q, chunk):
                    try:
                        found[key] = json.loads(value)
                    except json.JSONDecodeError:
                        continue  # a torn row is a miss
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        now = time.time()
        rows = [(k, canonical_json(v), now) for k, v in items]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")

    def record_failure(self, key: str, error: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO failures VALUES (?, ?, ?)", (key, error, time.time()))

    def failures(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._db.execute("SELECT key, error FROM failures ORDER BY created"))

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]

    # derived (parse / verify) -------------------------------------------------------------
    def get_derived(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM derived WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_derived(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO derived VALUES (?, ?)",
                             (key, canonical_json(value)))
