"""The request cache for model calls, an embedded SQLite file, and generating through it.

A key covers everything that changes a model's output: engine, model and revision, endpoint,
the model's content fingerprint (local folders) or resolved commit (hub ids), every engine
option not declared runtime-only, the fully rendered chat messages (system prompt included), image hashes, sampling settings and
the sample index. Dict order never matters (canonical JSON). Failed requests are stored in a
separate table, never as outputs, so the next run retries them. Parsing and verification are
cached under their own keys (``derived``), so a parser change never re-pays generation.

On disk (``FILE_FORMAT`` 2): ``outputs(key BLOB PRIMARY KEY, value BLOB, dict INTEGER,
created INTEGER)``, the key the 32 bytes of the sha256 (the same key as the hex digest) and the
value the canonical JSON of the output compressed with zstd. Reasoning traces of one cache
share most of their vocabulary, and a 4 KB text compressed alone keeps little of it, so once
``TRAIN_AFTER`` outputs are stored a zstd dictionary is trained from them, kept in the ``meta``
table, and every later output is compressed with it (``dict`` names it; 0: none). A cache of
an older file format is migrated in one pass when opened (its keys are unchanged in meaning).

Generating through the cache: each sample's cache key (:func:`cache_keys`), the counts of a
stage's model calls (:class:`GenerationStats`) and :func:`generate_cached`, which answers what
the cache holds, sends an engine only the rest and caches each answer as it arrives. Stages
reach it through ``ctx.generate``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zstandard

from dualcurate.chat import ChatRequest, Completion
from dualcurate.engine import engine_identity
from dualcurate.errors import DualcurateError
from dualcurate.fingerprint import canonical_json
from dualcurate.window import GenerationCancelled

if TYPE_CHECKING:
    from dualcurate.engine import Engine
    from dualcurate.sampling import SamplingParams
    from dualcurate.window import GenerationWindow

CACHE_FORMAT = 3  # 2: per-question seeds (seed_for(i, request)); 3: model fingerprints, engine options
#: The layout of the file (not of the keys): 1 text values, 2 zstd values with a trained dictionary.
FILE_FORMAT = 2
#: Outputs stored before the dictionary is trained from them.
TRAIN_AFTER = 512
DICT_SIZE = 112 * 1024
LEVEL = 3
#: SQLite page size of a new cache file.
PAGE_SIZE = 65536


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


def request_keys(*, engine: str, model: str, messages: Sequence[Mapping[str, Any]],
                 sampling: Mapping[str, Any], sample_indices: Sequence[int],
                 revision: str | None = None, endpoint: str | None = None,
                 image_hashes: Sequence[str] = (),
                 extra: Mapping[str, Any] | None = None) -> list[str]:
    """``request_key`` of each of ``sample_indices``, the request serialised once: the
    canonical JSON of the payload is its sorted top-level fields, so everything before and
    after ``sample_index`` is shared by every sample."""
    payload = {
        "v": CACHE_FORMAT, "engine": engine, "model": model, "revision": revision,
        "endpoint": endpoint, "messages": list(messages), "images": list(image_hashes),
        "sampling": dict(sampling), "extra": dict(extra or {}),
    }
    fields = sorted(payload)
    cut = sum(1 for name in fields if name < "sample_index")
    head = ",".join(f"{canonical_json(k)}:{canonical_json(payload[k])}" for k in fields[:cut])
    tail = ",".join(f"{canonical_json(k)}:{canonical_json(payload[k])}" for k in fields[cut:])
    prefix = hashlib.sha256(f'{{{head},"sample_index":'.encode())
    out = []
    for index in sample_indices:
        digest = prefix.copy()
        digest.update(f"{int(index)},{tail}}}".encode())
        out.append(digest.hexdigest())
    return out


def cache_keys(engine: Engine, request: ChatRequest, sampling: SamplingParams,
               sampling_key: dict[str, Any] | None = None) -> list[str]:
    """The cache key of each sample of ``request`` (``sampling_key``: ``sampling`` dumped to
    JSON once by a caller keying many requests)."""
    ident = engine_identity(engine)
    if sampling_key is None:
        sampling_key = sampling.model_dump(mode="json")
    extra = {k: v for k, v in ident.items() if k not in ("model", "revision", "endpoint")}
    return request_keys(engine=engine.name, model=ident.get("model", ""),
                        revision=ident.get("revision"), endpoint=ident.get("endpoint"),
                        messages=request.messages, image_hashes=request.image_hashes(),
                        sampling=sampling_key, sample_indices=request.indices(), extra=extra)


def derived_key(kind: str, version: str, inputs: Mapping[str, Any]) -> str:
    """Key for a parse/verify result: its own kind and version plus its inputs."""
    return hashlib.sha256(canonical_json({"kind": kind, "version": version,
                                          "inputs": dict(inputs)}).encode()).hexdigest()


class _Codec:
    """zstd with the cache's dictionaries: output values in, blobs out, and back."""

    def __init__(self) -> None:
        self.dicts: dict[int, zstandard.ZstdCompressionDict] = {}
        self.current = 0  # the dictionary new values are compressed with (0: none)
        self._compressors: dict[int, zstandard.ZstdCompressor] = {}
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {}

    def load(self, db: sqlite3.Connection) -> None:
        try:
            rows = list(db.execute("SELECT name, value FROM meta WHERE name LIKE 'dict:%'"))
        except sqlite3.OperationalError:  # no meta table (a file written before format 2)
            return
        for name, value in rows:
            number = int(name.split(":", 1)[1])
            if number not in self.dicts:
                self.dicts[number] = zstandard.ZstdCompressionDict(bytes(value))
        self.current = max(self.dicts, default=0)

    def compress(self, value: Mapping[str, Any]) -> tuple[bytes, int]:
        number = self.current
        comp = self._compressors.get(number)
        if comp is None:
            comp = self._compressors[number] = zstandard.ZstdCompressor(
                level=LEVEL, dict_data=self.dicts.get(number), write_content_size=True,
                write_checksum=False, write_dict_id=False)
        return comp.compress(canonical_json(value).encode()), number

    def decompress(self, blob: bytes, number: int) -> dict[str, Any] | None:
        """The value, or None when it cannot be read (a torn row, an unknown dictionary): a
        miss, asked again."""
        dec = self._decompressors.get(number)
        if dec is None:
            if number and number not in self.dicts:
                return None
            dec = self._decompressors[number] = zstandard.ZstdDecompressor(
                dict_data=self.dicts.get(number))
        try:
            value = json.loads(dec.decompress(blob))
        except (zstandard.ZstdError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return value if isinstance(value, dict) else None


_HEX = frozenset("0123456789abcdef")


def encode_key(key: str) -> bytes | str:
    """A key as stored: a sha256 hex digest as its 32 bytes, anything else as text (SQLite
    never finds a text value equal to a blob, so the two cannot collide)."""
    if len(key) == 64 and _HEX.issuperset(key):
        return bytes.fromhex(key)
    return key


def decode_key(stored: bytes | str) -> str:
    return stored.hex() if isinstance(stored, bytes) else stored


def read_outputs(db: sqlite3.Connection, codec: _Codec, keys: Sequence[str]
                 ) -> dict[str, dict[str, Any]]:
    """The outputs stored under ``keys`` (hex digests) in an open cache file."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), 500):
        chunk = [encode_key(k) for k in keys[start:start + 500]]
        q = f"SELECT key, value, dict FROM outputs WHERE key IN ({','.join('?' * len(chunk))})"
        for key, blob, number in db.execute(q, chunk):
            if number and number not in codec.dicts:
                codec.load(db)  # trained by another process since this one read them
            value = codec.decompress(blob, number)
            if value is not None:
                found[decode_key(key)] = value
    return found


def _file_format(db: sqlite3.Connection) -> int | None:
    """The cache file's format: None for a new (empty) file, 1 for the text-valued layout."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
        return int(row[0]) if row is not None else None
    return 1 if "outputs" in tables else None


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    # key: 32 bytes (a digest) or text; dict: the dictionary value was compressed with
    "CREATE TABLE IF NOT EXISTS outputs (key BLOB PRIMARY KEY, value BLOB NOT NULL, "
    "dict INTEGER NOT NULL, created INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS failures (key TEXT NOT NULL, error TEXT NOT NULL, "
    "created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS derived (key BLOB PRIMARY KEY, value TEXT NOT NULL)",
)


class RequestCache:
    """Thread-safe SQLite cache. Writes are committed at once (WAL), so a kill loses at most
    the request in flight."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=60)
        # A new file gets 64 KiB pages: a compressed trace of 1-2 KB leaves a fifth of a 4 KiB
        # page empty, a few percent of a 64 KiB one (an existing file keeps its page size).
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._codec = _Codec()
        self._open()
        self._undicted = 0 if self._codec.current else self._db.execute(
            "SELECT COUNT(*) FROM outputs").fetchone()[0]
        self.hits = 0
        self.misses = 0

    def _open(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")  # one process creates or migrates the file
        try:
            fmt = _file_format(self._db)
            if fmt is not None and fmt > FILE_FORMAT:
                raise DualcurateError(
                    f"request cache {self.path}: written by cache format {fmt}, this dualcurate "
                    f"reads format {FILE_FORMAT}; use another cache file ([run] cache) or "
                    f"upgrade dualcurate")
            if fmt == 1:
                self._db.execute("ALTER TABLE outputs RENAME TO outputs_v1")
                self._db.execute("ALTER TABLE derived RENAME TO derived_v1")
            for statement in SCHEMA:  # not executescript: it would commit the transaction
                self._db.execute(statement)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FILE_FORMAT,))
            self._codec.load(self._db)
            if fmt == 1:
                self._migrate()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if fmt == 1:
            self._db.execute("VACUUM")  # give back the pages the text values held

    def _migrate(self) -> None:
        """Format 1 (text values, hex keys) to 2, in one pass: the first ``TRAIN_AFTER``
        outputs train the dictionary, then every output is compressed with it."""
        old = self._db.execute("SELECT value FROM outputs_v1 LIMIT ?", (TRAIN_AFTER,))
        samples = [v.encode() for (v,) in old]
        if len(samples) >= TRAIN_AFTER:
            self._store_dict(samples)
        rows = self._db.execute("SELECT key, value, created FROM outputs_v1")
        while batch := rows.fetchmany(2000):
            out = []
            for key, text, created in batch:
                with contextlib.suppress(json.JSONDecodeError, ValueError):
                    blob, number = self._codec.compress(json.loads(text))
                    out.append((encode_key(key), blob, number, int(created)))
            self._db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)", out)
        pairs = [(encode_key(k), v)
                 for k, v in self._db.execute("SELECT key, value FROM derived_v1")]
        self._db.executemany("INSERT OR REPLACE INTO derived VALUES (?, ?)", pairs)
        self._db.execute("DROP TABLE outputs_v1")
        self._db.execute("DROP TABLE derived_v1")

    def _store_dict(self, samples: list[bytes]) -> None:
        """Train dictionary 1 from ``samples`` unless another writer stored one; load it."""
        try:
            trained = zstandard.train_dictionary(DICT_SIZE, samples, level=LEVEL)
        except zstandard.ZstdError:  # too little (or too uniform) text to train on
            return
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('dict:1', ?)",
                         (trained.as_bytes(),))
        self._codec.load(self._db)

    def _maybe_train(self) -> None:
        """Called under the lock after a write: train the dictionary once enough is stored."""
        if self._codec.current or self._undicted < TRAIN_AFTER:
            return
        self._codec.load(self._db)  # another process may have trained it
        if self._codec.current:
            return
        rows = self._db.execute("SELECT value, dict FROM outputs LIMIT ?", (TRAIN_AFTER * 2,))
        samples = []
        for blob, number in rows:
            value = self._codec.decompress(blob, number)
            if value is not None:
                samples.append(canonical_json(value).encode())
        self._store_dict(samples)
        if not self._codec.current:
            self._undicted = 0  # could not train: try again after as many more

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # outputs ------------------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        with self._lock:
            found = read_outputs(self._db, self._codec, keys)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        items = list(items)
        if not items:
            return
        now = int(time.time())
        with self._lock:
            rows = [(encode_key(k), *self._codec.compress(v), now) for k, v in items]
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
            if not self._codec.current:
                self._undicted += len(rows)
                self._maybe_train()

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
            row = self._db.execute("SELECT value FROM derived WHERE key = ?",
                                   (encode_key(key),)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_derived(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO derived VALUES (?, ?)",
                             (encode_key(key), canonical_json(value)))


# generating through the cache ------------------------------------------------------------

class GenerationStats:
    """Counts of one stage's (or one shard's) model calls; thread-safe. A shard's stats add
    into the stage's (``parent``) as well."""

    FIELDS = ("requests", "sent", "cached", "failed", "completion_tokens")

    def __init__(self, parent: GenerationStats | None = None) -> None:
        self.parent = parent
        self.requests = self.sent = self.cached = self.failed = self.completion_tokens = 0
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)
        if self.parent is not None:
            self.parent.add(**counts)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.FIELDS}


_LOCKS_GUARD = threading.Lock()


def _serial_lock(engine: Engine) -> threading.Lock:
    """The lock that makes an engine without ``concurrent_generate`` take one call at a time."""
    lock = engine.__dict__.get("_dualcurate_serial")
    if lock is None:
        with _LOCKS_GUARD:
            lock = engine.__dict__.setdefault("_dualcurate_serial", threading.Lock())
    return lock


def generate_cached(engine: Engine, requests: Sequence[ChatRequest], sampling: SamplingParams,
                    cache: RequestCache | None, progress: Any = None,
                    stats: GenerationStats | None = None, window: GenerationWindow | None = None,
                    token: Hashable | None = None) -> list[list[Completion]]:
    """Generate through the request cache: only samples without a cached output are sent,
    each result is committed to the cache as it arrives, failures are recorded (not cached).

    ``window`` (the streaming executor's) counts the samples handed to the engine and
    answered, for the shard ``token``, so the executor knows when to admit the next shard.
    May be called from several threads at once."""
    stats = stats if stats is not None else GenerationStats()
    if progress is not None:
        progress.expect(len(requests))  # progress counts requests on top of the stage's rows
    results: list[list[Completion | None]] = [[None] * len(r.indices()) for r in requests]
    sampling_key = sampling.model_dump(mode="json")
    keys = [cache_keys(engine, r, sampling, sampling_key) for r in requests]
    found = cache.get_many(k for ks in keys for k in ks) if cache is not None else {}

    pending: list[ChatRequest] = []
    where: list[tuple[int, list[int]]] = []  # pending i -> (request index, positions)
    cached = 0
    for ri, (req, ks) in enumerate(zip(requests, keys, strict=True)):
        missing_pos = []
        for pos, key in enumerate(ks):
            hit = found.get(key)
            if hit is not None:
                results[ri][pos] = Completion(**hit, cached=True)
            else:
                missing_pos.append(pos)
        cached += len(ks) - len(missing_pos)
        if missing_pos:
            idx = req.indices()
            pending.append(ChatRequest(messages=req.messages, n=len(missing_pos),
                                       sample_indices=[idx[p] for p in missing_pos],
                                       request_id=req.request_id,
                                       _seed_bases=req._seed_bases))
            where.append((ri, missing_pos))
    stats.add(requests=len(requests), cached=cached)
    if progress is not None:
        progress.advance_requests(len(requests) - len(pending), cached=True)
    to_send = sum(len(p.indices()) for p in pending)
    if window is not None and window.cancelled and pending:
        raise GenerationCancelled(f"stage stopped; {to_send} samples not sent")
    if window is not None:
        window.submitted(token, to_send, engine.capacity() if pending else 0)

    lock = threading.Lock()
    reported: set[int] = set()
    kept: list[set[int]] = [set() for _ in pending]  # positions of each pending request kept

    def on_result(pi: int, completions: list[Completion],
                  positions: Sequence[int] | None = None) -> None:
        """A pending request's answers: all of them, or (``positions``, for engines that
        report samples as they arrive) those samples of it. Each is cached at once."""
        ri, all_positions = where[pi]
        chosen = range(len(all_positions)) if positions is None else positions
        to_cache = []
        failed = tokens = fresh = 0
        with lock:
            if pi in reported:
                return
            for local, comp in zip(chosen, completions, strict=False):
                if local in kept[pi]:
                    continue
                kept[pi].add(local)
                fresh += 1
                pos = all_positions[local]
                results[ri][pos] = comp
                if comp.ok:
                    to_cache.append((keys[ri][pos], comp.to_cache()))
                    tokens += comp.completion_tokens
                else:
                    failed += 1
                    if cache is not None:
                        cache.record_failure(keys[ri][pos], comp.error or "unknown error")
            finished = len(kept[pi]) == len(all_positions)
            if finished:
                reported.add(pi)
        stats.add(sent=fresh, failed=failed, completion_tokens=tokens)
        if cache is not None and to_cache:
            cache.put_many(to_cache)
        if window is not None:
            window.answered(fresh)
        if progress is not None:
            progress.advance_requests(1 if finished else 0, tokens=tokens, errors=failed)

    on_result.accepts_partial = True  # type: ignore[attr-defined]

    if pending:
        try:
            if engine.concurrent_generate:
                returned = engine.generate(pending, sampling, on_result=on_result)
            else:
                with _serial_lock(engine):
                    returned = engine.generate(pending, sampling, on_result=on_result)
            # Engines should report through on_result; accept a plain return value too.
            for pi, completions in enumerate(returned or []):
                if pi not in reported:
                    on_result(pi, completions)
        finally:
            if window is not None:  # what never came back no longer counts as in flight
                with lock:
                    unreported = sum(len(where[pi][1]) - len(kept[pi])
                                     for pi in range(len(pending)))
                window.answered(unreported)
    final: list[list[Completion]] = []
    for ri, row in enumerate(results):
        filled = []
        for pos, comp in enumerate(row):
            if comp is None:  # engine returned fewer than asked: record as a failure
                comp = Completion(error=f"engine {engine.name} returned no sample "
                                        f"{requests[ri].indices()[pos]} for request "
                                        f"{requests[ri].request_id or ri}")
            filled.append(comp)
        final.append(filled)
    return final
