"""What a model or a file *is*, not what it is called: content fingerprints for cache keys and
stage signatures.

* A local file: the sha256 of its bytes.
* A local model folder: the sha256 over the names and content hashes of its files (config,
  tokenizer, chat template, weights; every regular file at the top level except hidden files,
  READMEs and licences). Retraining a model in the same folder changes it; moving the folder
  does not.
* A hub id: ``{"id", "revision", "resolved"}`` where ``resolved`` is the commit the local
  Hugging Face cache resolves ``revision`` (default ``main``) to, when it holds the model
  (no network is used); else None, and the id and revision stand for the model as before.

Hashing a file is paid once: each file's hash is kept by (path, size, mtime, ctime, inode) in
memory and in ``$DUALCURATE_HASH_CACHE`` (default ``~/.cache/dualcurate/file-hashes.sqlite``),
so a 500 GB model folder is read once, and a rerun only ``stat``s its files. Any write to a
file changes its mtime and ctime, so a retrained model is hashed again; a file written in the
last two seconds is not cached at all (a second write within the same timestamp tick would
not show in its stat).

Whatever is hashed as a structure (a request cache key, a request's seeds, a stage's options)
is hashed as its canonical JSON (:func:`canonical_json`), so dict order never matters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SKIP = re.compile(r"^(\.|readme|license|licence|notice)", re.IGNORECASE)
_MEMO: dict[tuple[str, int, int, int, int], str] = {}
_LOCK = threading.Lock()
_DB: dict[str, sqlite3.Connection] = {}


def canonical_json(obj: Any) -> str:
    """``obj`` as JSON with sorted keys, no spaces and text as written (values JSON has no
    type for as their ``str``): the same bytes for the same value, whatever its dict order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def hash_cache_path() -> Path:
    raw = os.environ.get("DUALCURATE_HASH_CACHE")
    if raw:
        return Path(raw).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dualcurate" / "file-hashes.sqlite"


def _db() -> sqlite3.Connection | None:
    path = str(hash_cache_path())
    db = _DB.get(path)
    if db is None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                 timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT, size INTEGER, "
                       "mtime INTEGER, ctime INTEGER, ino INTEGER, sha256 TEXT, "
                       "PRIMARY KEY (path, size, mtime, ctime, ino))")
        except (OSError, sqlite3.Error):
            return None  # an unwritable home: hash in memory only
        _DB[path] = db
    return db


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 hex of a file's bytes, cached by its path, size, mtime, ctime and inode."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with _LOCK:
        hit = _MEMO.get(key)
        if hit is not None:
            return hit
        db = _db()
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                row = db.execute("SELECT sha256 FROM hashes WHERE path=? AND size=? AND mtime=? "
                                 "AND ctime=? AND ino=?", key).fetchone()
                if row is not None:
                    _MEMO[key] = row[0]
                    return row[0]
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    # A file modified in the last two seconds may be modified again within the same mtime
    # tick without its stat changing (git's "racy" case): hash it again next time.
    if time.time_ns() - st.st_mtime_ns < 2_000_000_000:
        return value
    with _LOCK:
        _MEMO[key] = value
        db = _db()
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)",
                           (*key, value))
    return value


def folder_digest(folder: str | os.PathLike[str]) -> str:
    """sha256 over the names and content hashes of a model folder's top-level files."""
    root = Path(folder)
    parts = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if _SKIP.match(entry.name) or not entry.is_file():
            continue
        parts.append(f"{entry.name}\0{file_digest(entry)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def path_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """Content fingerprint of a local file or folder; None when the path does not exist."""
    p = Path(path).expanduser()
    if p.is_file():
        return file_digest(p)
    if p.is_dir():
        return folder_digest(p)
    return None


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "huggingface")
    return Path(home).expanduser() / "hub"


def resolve_hub_revision(model_id: str, revision: str | None = None) -> str | None:
    """The commit ``revision`` (default ``main``) of hub model ``model_id`` resolves to in the
    local Hugging Face cache, without any network; None when the cache does not hold it."""
    if revision and _COMMIT.match(revision):
        return revision
    folder = hub_cache_dir() / ("models--" + model_id.replace("/", "--"))
    ref = folder / "refs" / (revision or "main")
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit if _COMMIT.match(commit) else None


def model_fingerprint(model: str, revision: str | None = None) -> dict[str, Any]:
    """What identifies a model's weights: a local file or folder by content, a hub id by the
    commit its revision resolves to (when the local cache knows it)."""
    path = Path(model).expanduser()
    if path.exists():
        return {"local": path_fingerprint(path)}
    return {"hub": model, "revision": revision, "resolved": resolve_hub_revision(model, revision)}
