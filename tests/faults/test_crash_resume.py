"""Items 1, 2 and 14: a real ``curate run`` (hf-dataset -> openai-distill against a loopback
teacher) killed mid-stage, killed mid-Parquet-write, and relaunched with other runtime
settings: the rerun loses nothing, duplicates nothing and pays only for what is missing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .helpers import (
    CURATE,
    SECRET,
    Gate,
    cached_outputs,
    clean_env,
    curate,
    distill_recipe,
    rows,
    start_server,
    teacher,
    wait_for,
    write_questions,
)

pytestmark = pytest.mark.faults
N = 100
KILL_AFTER = 37


def assert_complete(run_dir: Path) -> None:
    """Exactly N distilled rows, unique ids, one good trace each with the right answer."""
    distilled = rows(run_dir, "distill")
    ids = [r["id"] for r in distilled]
    assert len(ids) == N and len(set(ids)) == N
    assert sorted(int(r["answer"]) // 2 for r in distilled) == list(range(N))
    for row in distilled:
        (trace,) = row["traces"]
        assert trace["error"] is None and trace["answer"] == row["answer"], row["id"]
    assert not [p for p in (run_dir / "distill").iterdir() if p.name.startswith(".tmp-")]


def kill_after(gate: Gate, server, cmd: list[str], run_dir: Path, cwd: Path,
               env: dict[str, str]) -> int:
    """Start ``cmd``, SIGKILL it once ``gate.limit`` answers are in the cache; return how many
    requests had reached the server by then."""
    with open(cwd / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=log)
    try:
        wait_for(lambda: (gate.answered == gate.limit
                 and cached_outputs(run_dir / "cache.sqlite") == gate.limit)
                 or proc.poll() is not None, 90, f"{gate.limit} cached answers")
        assert proc.poll() is None, (cwd / "first.log").read_text()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    reached = server.count
    gate.released = True
    gate.limit = 10**9
    server.reset()
    return reached


@pytest.mark.parametrize("rerun_args", [
    pytest.param([], id="same-settings"),
    pytest.param(["--set", "distill.engine.max_concurrency=1", "--set", "source.batch_size=7"],
                 id="other-concurrency-and-batch-size"),
])
def test_sigkill_after_37_of_100_requests_then_resume(tmp_path: Path, rerun_args: list[str]):
    gate = Gate(KILL_AFTER)
    server = start_server(gate)
    try:
        recipe = distill_recipe(tmp_path / "recipe.toml", write_questions(tmp_path / "q.jsonl"),
                                server.base_url)
        run_dir = tmp_path / "run"
        env = clean_env(FAULT_TEST_API_KEY=SECRET)
        reached = kill_after(gate, server, [str(CURATE), "run", str(recipe), "--out",
                                            str(run_dir)], run_dir, tmp_path, env)
        assert KILL_AFTER <= reached <= KILL_AFTER + 4  # the ones in flight at the kill
        assert cached_outputs(run_dir / "cache.sqlite") == KILL_AFTER

        if rerun_args:  # item 14: another shard count is refused, and changes nothing
            refused = curate("run", str(recipe), "--out", str(run_dir), "--set",
                             "run.shard_size=10", cwd=tmp_path, env=env)
            assert refused.returncode == 2, refused.stderr
            message = " ".join(refused.stderr.split())
            assert "shard_size=16" in message and "run.shard_size=16" in message
            assert "Traceback" not in refused.stderr and server.count == 0

        result = curate("run", str(recipe), "--out", str(run_dir), *rerun_args, cwd=tmp_path,
                        env=env)
        assert result.returncode == 0, result.stderr
        print(f"\nitem 1 ({'+'.join(rerun_args) or 'same settings'}): killed after "
              f"{KILL_AFTER} answers ({reached} requests had reached the server); the rerun "
              f"sent {server.count} requests")
        assert server.count == N - KILL_AFTER  # at most 63, and nothing is left undone
        assert_complete(run_dir)
        again = curate("run", str(recipe), "--out", str(run_dir), cwd=tmp_path, env=env)
        assert again.returncode == 0 and server.count == N - KILL_AFTER  # done: nothing sent
    finally:
        gate.released = True
        server.stop()


# A `curate run` that tears the third distill shard: half its bytes are written to the
# temporary file, then the process kills itself before the rename, as a power cut would.
TEAR = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    real_fsync = os.fsync
    seen = []
    def fsync(fd):
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.parent.name == "distill" and path.name.startswith(".tmp-"):
            seen.append(path)
            if len(seen) == 3:
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        return real_fsync(fd)
    os.fsync = fsync
    from dualcurate.cli import main
    main(sys.argv[1:])
""")


def test_killed_mid_parquet_write_and_torn_cache_rows(tmp_path: Path):
    server = start_server(teacher)
    try:
        recipe = distill_recipe(tmp_path / "recipe.toml", write_questions(tmp_path / "q.jsonl"),
                                server.base_url)
        run_dir = tmp_path / "run"
        env = clean_env(FAULT_TEST_API_KEY=SECRET)
        torn = subprocess.run([str(CURATE.parent / "python"), "-c", TEAR, "run", str(recipe),
                               "--out", str(run_dir)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert torn.returncode == -signal.SIGKILL, torn.stderr
        shards = sorted(p.name for p in (run_dir / "distill").glob("shard-*.parquet"))
        # streaming: shards finish in any order and are committed in order, so what is
        # visible is a prefix; the torn write and shards staged after it are hidden
        assert shards == [f"shard-{i:05d}.parquet" for i in range(len(shards))]
        assert len(shards) <= 2
        hidden = [p for p in (run_dir / "distill").iterdir() if p.name.startswith(".tmp-")]
        torn_files = []
        for path in hidden:
            try:
                pq.read_table(path)
            except pa.ArrowInvalid:
                torn_files.append(path)
        assert len(torn_files) == 1  # really torn, and invisible: not named as a shard

        # tear every cached answer too: a torn row must read as a miss, never as an output
        db = sqlite3.connect(run_dir / "cache.sqlite")
        cached = db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
        db.execute("UPDATE outputs SET value = substr(value, 1, length(value) / 2)")
        db.commit()
        db.close()
        assert cached >= 48  # at least three shards generated
        server.reset()

        result = curate("run", str(recipe), "--out", str(run_dir), cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        # the two committed shards are kept; everything else is asked again
        uncommitted = N - 16 * len(shards)
        print(f"\nitem 2: torn shard swept, {cached} torn cache rows; the rerun sent "
              f"{server.count} requests for the {uncommitted} uncommitted rows")
        assert server.count == uncommitted
        assert_complete(run_dir)
    finally:
        server.stop()
