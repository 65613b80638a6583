"""A hard time budget for the symbolic step that works from any thread or process.

math-verify bounds its own work with ``signal.alarm``, which only works in the main thread. We
switch that off and run math-verify in child processes instead (``python -m
dualcurate_verify._worker``, spoken to over pipes). A request that overruns its budget gets
``None`` and its worker is killed and replaced, so a hang costs at most the budget. Workers are
started on demand (one per concurrent caller, up to ``max_workers``), belong to the process
that started them (a forked child starts its own) and exit with their parent.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_BUDGET = 5.0
STARTUP_TIMEOUT = 120.0


class WorkerError(RuntimeError):
    """A symbolic worker died or could not start."""


class _Worker:
    def __init__(self, startup_timeout: float, python: str):
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            self.proc = subprocess.Popen(
                [python, "-m", "dualcurate_verify._worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0,
                close_fds=True)
        except OSError as exc:
            raise WorkerError(f"cannot start the math-verify worker with {python}: {exc}") from exc
        self._buffer = b""
        try:
            ready = self._read_line(startup_timeout)
        except (WorkerError, ValueError):
            ready = None
        if ready is None or not ready.get("ready"):
            self.kill()
            raise WorkerError("the math-verify worker did not start (is math-verify installed "
                              f"for {python}?)")

    def _read_line(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise WorkerError("the math-verify worker exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def call(self, request: dict[str, Any], budget: float) -> dict[str, Any] | None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"the math-verify worker is gone: {exc}") from exc
        return self._read_line(budget)

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None


class SymbolicPool:
    """Child processes running math-verify; :meth:`call` returns a reply dict, or None when the
    budget ran out (the worker is then killed). Thread-safe."""

    def __init__(self, max_workers: int = 2, startup_timeout: float = STARTUP_TIMEOUT,
                 python: str = sys.executable):
        self.python = python
        self.max_workers = max(1, max_workers)
        self.startup_timeout = startup_timeout
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._count = 0
        self._all: list[_Worker] = []
        self._pid = os.getpid()
        self.timeouts = 0

    def _acquire(self) -> _Worker:
        while True:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                spawn = self._count < self.max_workers
                if spawn:
                    self._count += 1
            if spawn:
                break
            try:  # all busy: wait for one, re-checking in case a busy one was discarded
                return self._idle.get(timeout=0.05)
            except queue.Empty:
                continue
        try:
            worker = _Worker(self.startup_timeout, self.python)
        except BaseException:
            with self._lock:
                self._count -= 1
            raise
        with self._lock:
            self._all.append(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._count -= 1
            if worker in self._all:
                self._all.remove(worker)

    def call(self, request: dict[str, Any], budget: float = DEFAULT_BUDGET) -> dict[str, Any] | None:
        """Send ``request`` to a worker; None when no reply came within ``budget`` seconds."""
        worker = self._acquire()
        try:
            reply = worker.call(request, budget)
        except WorkerError:
            self._discard(worker)
            return {"ok": False, "error": "the math-verify worker crashed"}
        except BaseException:
            self._discard(worker)
            raise
        if reply is None:
            self.timeouts += 1
            self._discard(worker)
            return None
        self._idle.put(worker)
        return reply

    def close(self) -> None:
        """Stop every worker (they also exit when this process does)."""
        with self._lock:
            workers, self._all = self._all, []
            self._count = 0
        for worker in workers:
            worker.kill()
        while not self._idle.empty():
            self._idle.get_nowait()


_POOL: SymbolicPool | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> SymbolicPool:
    """The process-wide pool (created on first use; a forked child gets its own)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._pid != os.getpid():
            _POOL = SymbolicPool(max_workers=int(os.environ.get("DUALCURATE_VERIFY_WORKERS", "2")))
        return _POOL


def _forget_after_fork() -> None:
    global _POOL, _POOL_LOCK
    _POOL = None  # the parent's workers are not ours to use or kill
    _POOL_LOCK = threading.Lock()


def _close_at_exit() -> None:
    if _POOL is not None and _POOL._pid == os.getpid():
        _POOL.close()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_close_at_exit)
