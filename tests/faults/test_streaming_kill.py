"""SIGKILL in the middle of a streaming distill stage (many shards in flight, a slow tail in
every shard) against a loopback teacher: the rerun re-sends at most what was in flight, and
commits exactly the rows an uninterrupted run commits."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dualcurate_openai.testing import Reply, chat_response

from .helpers import (
    CURATE,
    SECRET,
    cached_outputs,
    clean_env,
    curate,
    distill_recipe,
    item_of,
    rows,
    start_server,
    wait_for,
    write_questions,
)

pytestmark = pytest.mark.faults
N = 96          # questions: 12 shards of 8
K = 2           # samples per question
CONCURRENCY = 8


class TailTeacher:
    """Answers with the item's sum and the sample's seed; every eighth item is slow, so each
    shard waits on one slow request. Records each answered (item, seed)."""

    def __init__(self) -> None:
        self.answered: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    async def __call__(self, body: dict[str, Any], headers: dict[str, str], number: int) -> Reply:
        import asyncio

        item, seed = item_of(body), body.get("seed")
        await asyncio.sleep(0.6 if item % 8 == 3 else 0.02)
        with self.lock:
            self.answered.append((item, seed))
        return Reply(body=chat_response(f"<think>{item} plus {item}, seed {seed}</think>"
                                        f"<answer>{2 * item}</answer>"))


def recipe(tmp_path: Path, base_url: str) -> Path:
    return distill_recipe(tmp_path / "recipe.toml", write_questions(tmp_path / "q.jsonl", N),
                          base_url, shard_size=8,
                          distill=f"samples_per_question = {K}\n")


def traces(run_dir: Path) -> list[tuple[str, list[str]]]:
    return [(r["id"], [t["text"] for t in r["traces"]]) for r in rows(run_dir, "distill")]


def test_sigkill_mid_stream_resends_at_most_what_was_in_flight(tmp_path: Path):
    teacher = TailTeacher()
    server = start_server(teacher)
    env = clean_env(FAULT_TEST_API_KEY=SECRET)
    try:
        path = recipe(tmp_path, server.base_url)
        # uninterrupted, for reference (its own run directory and cache)
        full = curate("run", str(path), "--out", str(tmp_path / "full"), cwd=tmp_path, env=env)
        assert full.returncode == 0, full.stderr
        spans = {(item_of(s.body), s.body.get("seed")): (s.start, s.end) for s in server.seen}
        slow_end = max(end for (item, _), (_, end) in spans.items() if item == 3)
        assert any(start < slow_end for (item, _), (start, _) in spans.items() if item >= 8), \
            "shard 1 must be on the wire while shard 0 waits for its slow request"

        server.reset()
        teacher.answered.clear()
        run_dir = tmp_path / "run"
        with open(tmp_path / "first.log", "w") as log:
            proc = subprocess.Popen([str(CURATE), "run", str(path), "--out", str(run_dir)],
                                    cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            wait_for(lambda: cached_outputs(run_dir / "cache.sqlite") >= N * K // 2
                     or proc.poll() is not None, 90, "half the samples cached")
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        time.sleep(0.7)  # let the server finish answering what was in flight at the kill
        with teacher.lock:
            before = set(teacher.answered)
        committed = len(list((run_dir / "distill").glob("shard-*.parquet")))
        assert committed < N // 8  # killed mid-stage

        server.reset()
        teacher.answered.clear()
        again = curate("run", str(path), "--out", str(run_dir), cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr
        after = list(teacher.answered)
        resent = [key for key in after if key in before]
        print(f"\nstreaming kill: {len(before)} samples answered before the kill, "
              f"{committed} of {N // 8} shards committed; the rerun sent {len(after)}, "
              f"{len(resent)} of them again")
        assert len(resent) <= CONCURRENCY  # only what was in flight when the process died
        assert len(before) + len(after) - len(resent) == N * K  # nothing missing
        assert traces(run_dir) == traces(tmp_path / "full")  # identical rows, in order
        assert not [p for p in (run_dir / "distill").iterdir() if p.name.startswith(".tmp-")]
    finally:
        server.stop()
