"""The request cache with many writers: one append-only segment per writer, merged on read
(dualcurate.cache_segments), under concurrent writers in several processes and a kill."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate.cache import RequestCache
from dualcurate.cache_segments import (
    SegmentedCache,
    checkpoint,
    merge_segments,
    read_segment,
    segment_dir,
)


def _value(writer: int, i: int) -> dict:
    return {"text": f"answer {writer}-{i} " + "x" * (i % 300), "tokens": i}


def _write(cache_path: str, writer: int, count: int, batch: int) -> None:
    cache = SegmentedCache(cache_path, f"w{writer}")
    for start in range(0, count, batch):
        cache.put_many([(f"k{writer}-{i}", _value(writer, i))
                        for i in range(start, min(start + batch, count))])
        cache.record_failure(f"f{writer}-{start}", "boom")
    cache.put_derived(f"d{writer}", {"ok": writer})
    cache.close()


def _write_forever(cache_path: str, writer: int, ready) -> None:
    cache = SegmentedCache(cache_path, f"w{writer}")
    i = 0
    while True:
        cache.put_many([(f"k{writer}-{i}", _value(writer, i))])
        i += 1
        if i == 50:
            ready.set()


def test_concurrent_writers_in_processes_all_merged(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    main = RequestCache(path)
    main.put_many([("old", {"text": "from an earlier run"})])
    checkpoint(path)  # the driver's part before workers start: the main file holds it all
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write, args=(str(path), w, 400, 7)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    # merged on read: a reader sees every writer's answers before anything is folded
    reader = SegmentedCache(path, "reader", attach=sorted(segment_dir(path).glob("w*.jsonl")))
    keys = [f"k{w}-{i}" for w in range(4) for i in range(400)]
    found = reader.get_many([*keys, "old", "missing"])
    assert set(found) == {*keys, "old"}
    assert found["k3-399"] == _value(3, 399)
    assert reader.get_derived("d2") == {"ok": 2}
    reader.close()
    folded = merge_segments(main)
    assert folded == 4 * (400 + 58 + 1)
    assert main.count() == 1 + 4 * 400
    assert main.get("k1-17") == _value(1, 17)
    assert main.get_derived("d0") == {"ok": 0}
    assert len(main.failures()) == 4 * 58
    assert list(segment_dir(path).iterdir()) == []  # folded segments are deleted
    # idempotent: folding nothing again changes nothing
    assert merge_segments(main, ["w0", "w1"]) == 0
    assert main.count() == 1 + 4 * 400
    main.close()


def test_killed_writer_loses_only_its_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_write_forever, args=(str(path), 9, ready))
    proc.start()
    assert ready.wait(60)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    segment = segment_dir(path) / "w9.jsonl"
    with open(segment, "ab") as fh:  # what a kill mid-write leaves
        fh.write(b'{"t":"o","k":"torn","v":{"te')
    records = [r for _, r in read_segment(segment)]
    assert len(records) >= 50
    assert [r["k"] for r in records] == [f"k9-{i}" for i in range(len(records))]
    # another worker attaching the dead writer's segment reads every complete answer
    other = SegmentedCache(path, "w10", attach=[segment])
    assert set(other.get_many([f"k9-{i}" for i in range(len(records))])) == \
        {f"k9-{i}" for i in range(len(records))}
    assert other.get("torn") is None
    other.close()
    main = RequestCache(path)
    merge_segments(main, ["w9"])
    assert main.count() == len(records)
    main.close()


def test_workers_read_the_main_file_without_locks(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    main = RequestCache(path)
    main.put_many([(f"m{i}", {"text": str(i)}) for i in range(1200)])
    merge_segments(main)  # checkpoints: the main file alone holds everything
    worker = SegmentedCache(path, "w0")
    assert len(worker.get_many(f"m{i}" for i in range(1200))) == 1200
    worker.put_many([("m5", {"text": "newer"})])
    assert worker.get("m5") == {"text": "newer"}  # its own segment first
    assert worker.failures() == [] and worker.count() == 1
    worker.close()
    main.close()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8),
                          st.dictionaries(st.text(max_size=5), st.integers() | st.text())),
                max_size=20))
def test_segment_round_trip(tmp_path_factory, items) -> None:
    folder = tmp_path_factory.mktemp("seg")
    cache = SegmentedCache(folder / "c.sqlite", "w")
    cache.put_many(items)
    expected = dict(items)
    assert cache.get_many(expected) == expected
    cache.close()
    main = RequestCache(folder / "c.sqlite")
    merge_segments(main)
    assert main.get_many(expected) == expected
    main.close()


def test_a_live_writers_segment_is_never_folded(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    main = RequestCache(path)
    live = SegmentedCache(path, "live")
    live.put_many([("a", {"text": "1"})])
    done = SegmentedCache(path, "done")
    done.put_many([("b", {"text": "2"})])
    done.close()
    assert merge_segments(main) == 1  # only the closed writer's
    assert main.get("a") is None and main.get("b") == {"text": "2"}
    live.put_many([("c", {"text": "3"})])  # still appending to a file that still exists
    live.close()
    assert merge_segments(main) == 2
    assert main.get_many(["a", "b", "c"]).keys() == {"a", "b", "c"}
    main.close()
