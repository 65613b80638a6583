"""SIGKILL a ``curate run`` in batch mode after it submitted its batch, while the batch is
still in progress at the (fake) Batch API; the rerun attaches to the recorded batch instead
of paying for a second one, and the run after that sends nothing at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from dualcurate_openai.testing import BatchPlan, ScriptedServer

from .helpers import (
    CURATE,
    SECRET,
    cached_outputs,
    clean_env,
    curate,
    distill_recipe,
    rows,
    teacher,
    wait_for,
    write_questions,
)

pytestmark = pytest.mark.faults
N = 24   # questions: 3 shards of 8
K = 2    # samples per question: text questions go as one line per sample


def submitted_ids(run_dir: Path) -> set[str]:
    path = run_dir / "batches" / "openai.jsonl"
    if not path.exists():
        return set()
    events = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    uploads = {e["file"]: e["custom_ids"] for e in events if e["event"] == "uploaded"}
    return {cid for e in events if e["event"] == "submitted" for cid in uploads[e["file"]]}


def test_sigkill_after_submitting_then_rerun_attaches_to_the_batch(tmp_path: Path):
    hold = threading.Event()
    server = ScriptedServer(teacher, batch_plan=BatchPlan(hold=hold)).start()
    env = clean_env(FAULT_TEST_API_KEY=SECRET)
    try:
        path = distill_recipe(tmp_path / "recipe.toml", write_questions(tmp_path / "q.jsonl", N),
                              server.base_url, shard_size=8,
                              distill=f"samples_per_question = {K}\n",
                              engine="batch = true\nbatch_linger = 1.0\n"
                                     "batch_poll_interval = 0.05\n")
        run_dir = tmp_path / "run"
        with open(tmp_path / "first.log", "w") as log:
            proc = subprocess.Popen([str(CURATE), "run", str(path), "--out", str(run_dir)],
                                    cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            wait_for(lambda: len(submitted_ids(run_dir)) >= N * K or proc.poll() is not None,
                     90, "every request submitted in a batch")
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        batches = dict(server.batches)
        assert batches and all(b["status"] == "in_progress" for b in batches.values())
        assert server.count == 0 and not server.batch_seen  # nothing answered yet
        assert not rows(run_dir, "distill")

        hold.set()  # the service finishes the batch while no client is running
        again = curate("run", str(path), "--out", str(run_dir), cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr
        assert server.batches.keys() == batches.keys()  # no second batch
        ids = server.batch_requests()
        assert len(ids) == len(set(ids)) == N * K  # every request paid for once
        assert len(server.batch_seen) == N * K and server.count == 0
        got = rows(run_dir, "distill")
        assert len(got) == N
        for row in got:
            n = int(row["question"].split("Item ")[1].split(":")[0])
            assert len(row["traces"]) == K
            assert all(f"<answer>{2 * n}</answer>" in t["text"] for t in row["traces"])
        assert cached_outputs(run_dir / "cache.sqlite") == N * K

        # the answers are in the request cache: a new run directory holding only that cache
        # (no batch records) sends nothing anywhere
        files = len(server.files)
        server.reset()
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        (fresh / "cache.sqlite").write_bytes((run_dir / "cache.sqlite").read_bytes())
        third = curate("run", str(path), "--out", str(fresh), cwd=tmp_path, env=env)
        assert third.returncode == 0, third.stderr
        assert server.count == 0 and not server.batch_seen
        assert len(server.files) == files and server.batches.keys() == batches.keys()
        assert len(rows(fresh, "distill")) == N
        for p in (run_dir / "batches").iterdir():
            assert SECRET not in p.read_text()
        for out in (again, third):
            assert SECRET not in out.stdout + out.stderr
    finally:
        hold.set()
        server.stop()

