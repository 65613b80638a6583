"""The request cache's file: compressed values, a trained dictionary, old files migrated."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate import cache as cache_mod
from dualcurate.cache import FILE_FORMAT, RequestCache, derived_key, request_key
from dualcurate.cache_segments import SegmentedCache, checkpoint
from dualcurate.errors import DualcurateError
from dualcurate.fingerprint import canonical_json

WORDS = [f"{a}{b}{c}" for a in ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ti")
         for b in ("ba", "de", "fi", "go", "hu", "ja") for c in ("", "n", "r", "st")]


def trace(rng: random.Random, size: int = 1500) -> str:
    parts = ["<think>"]
    while sum(map(len, parts)) < size:
        parts.append(" ".join(rng.choices(WORDS, k=8)) + f" {rng.randrange(10**6)}.")
    return " ".join(parts) + "</think> 42"


def key(i: int) -> str:
    return request_key(engine="e", model="m", messages=[{"role": "user", "content": str(i)}],
                       sampling={}, sample_index=0)


def value(rng: random.Random) -> dict:
    return {"text": trace(rng), "finish_reason": "stop", "prompt_tokens": 3,
            "completion_tokens": 400}


def test_values_are_compressed_and_a_dictionary_is_trained(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "TRAIN_AFTER", 40)
    rng = random.Random(0)
    items = [(key(i), value(rng)) for i in range(120)]
    cache = RequestCache(tmp_path / "c.sqlite")
    for k, v in items:
        cache.put(k, v)
    rows = cache._db.execute("SELECT dict, length(value) FROM outputs").fetchall()
    assert {d for d, _ in rows} == {0, 1}  # the first ones before the dictionary, then with it
    assert cache._db.execute("SELECT COUNT(*) FROM meta WHERE name = 'dict:1'").fetchone()[0] == 1
    stored = sum(n for _, n in rows)
    assert stored < 0.5 * sum(len(v["text"]) for _, v in items)
    assert cache.get_many(k for k, _ in items) == dict(items)
    cache.close()
    reopened = RequestCache(tmp_path / "c.sqlite")  # the dictionary is read back
    assert reopened.get_many(k for k, _ in items) == dict(items)
    reopened.put(key(999), items[0][1])
    assert reopened._db.execute("SELECT dict FROM outputs WHERE key = ?",
                                (bytes.fromhex(key(999)),)).fetchone()[0] == 1


def test_a_second_process_reads_the_dictionary_another_trained(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "TRAIN_AFTER", 30)
    rng = random.Random(1)
    reader = RequestCache(tmp_path / "c.sqlite")  # opened before any dictionary exists
    writer = RequestCache(tmp_path / "c.sqlite")
    items = [(key(i), value(rng)) for i in range(80)]
    writer.put_many(items[:40])
    writer.put_many(items[40:])
    assert reader.get_many(k for k, _ in items) == dict(items)


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.one_of(
    st.text(max_size=200), st.integers(-10**9, 10**9), st.none()), max_size=5))
def test_any_output_round_trips(tmp_path_factory, out):
    cache = RequestCache(tmp_path_factory.mktemp("c") / "c.sqlite")
    cache.put(key(1), out)
    cache.put("not-a-digest", out)
    assert cache.get_many([key(1), "not-a-digest"]) == {key(1): out, "not-a-digest": out}


def _old_cache(path: Path, items: list[tuple[str, dict]], derived: dict[str, object]) -> None:
    """A cache file as format 1 wrote it: hex keys, JSON text values."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE outputs (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL);
        CREATE TABLE failures (key TEXT NOT NULL, error TEXT NOT NULL, created REAL NOT NULL);
        CREATE TABLE derived (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """)
    db.executemany("INSERT INTO outputs VALUES (?, ?, 1.5)",
                   [(k, canonical_json(v)) for k, v in items])
    db.executemany("INSERT INTO derived VALUES (?, ?)",
                   [(k, canonical_json(v)) for k, v in derived.items()])
    db.execute("INSERT INTO failures VALUES ('f', 'boom', 1.0)")
    db.commit()
    db.close()


def test_an_old_cache_is_migrated_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "TRAIN_AFTER", 50)
    rng = random.Random(2)
    items = [(key(i), value(rng)) for i in range(200)]
    derived = {derived_key("parse", "1", {"i": i}): {"answer": str(i)} for i in range(5)}
    path = tmp_path / "cache.sqlite"
    _old_cache(path, items, derived)
    before = path.stat().st_size
    cache = RequestCache(path)
    assert cache.get_many(k for k, _ in items) == dict(items)
    assert all(cache.get_derived(k) == v for k, v in derived.items())
    assert cache.failures() == [("f", "boom")]
    assert cache._db.execute("SELECT DISTINCT dict FROM outputs").fetchall() == [(1,)]
    cache.close()
    checkpoint(path)
    assert path.stat().st_size < 0.6 * before


def test_a_newer_cache_is_refused(tmp_path):
    path = tmp_path / "cache.sqlite"
    RequestCache(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE name = 'format'", (FILE_FORMAT + 1,))
    db.commit()
    db.close()
    with pytest.raises(DualcurateError, match=r"cache format 3.*reads format 2.*another cache"):
        RequestCache(path)


def test_segment_workers_read_the_compressed_main_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "TRAIN_AFTER", 20)
    rng = random.Random(3)
    items = [(key(i), value(rng)) for i in range(60)]
    path = tmp_path / "cache.sqlite"
    main = RequestCache(path)
    main.put_many(items[:25])
    main.put_many(items[25:])
    main.put_derived(derived_key("v", "1", {}), {"ok": True})
    main.close()
    checkpoint(path)
    worker = SegmentedCache(path, "w0")
    assert worker.get_many(k for k, _ in items) == dict(items)
    assert worker.get_derived(derived_key("v", "1", {})) == {"ok": True}
    worker.close()
