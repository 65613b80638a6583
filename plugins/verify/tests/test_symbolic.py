"""The symbolic step's time budget: from threads, from child processes, and on a hang."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor

from dualcurate_verify import check
from dualcurate_verify.symbolic import SymbolicPool, default_pool

PAIRS = [("x^2+2x+1", "(x+1)^2", "correct"), ("\\sqrt{8}", "2\\sqrt{2}", "correct"),
         ("\\frac{\\pi}{3}", "\\frac{2\\pi}{6}", "correct"), ("x^2", "x^3", "incorrect"),
         ("\\sin^2 x + \\cos^2 x", "1", "correct"), ("2x+3", "3+2x", "correct")]


def _verdicts() -> list[str]:
    return [check(g, f"\\boxed{{{a}}}").verdict for g, a, _ in PAIRS]


def test_symbolic_pairs() -> None:
    assert _verdicts() == [v for _, _, v in PAIRS]


def test_from_threads() -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: check(*PAIRS[i % len(PAIRS)][:2]).verdict, range(24)))
    assert results == [PAIRS[i % len(PAIRS)][2] for i in range(24)]


def _child(queue) -> None:  # runs in a child process
    queue.put(_verdicts())


def test_from_child_processes() -> None:
    default_pool().call({"op": "ping"})  # the parent has workers; children must start their own
    for method in ("fork", "spawn"):
        ctx = multiprocessing.get_context(method)
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(queue,))
        proc.start()
        got = queue.get(timeout=120)
        proc.join(60)
        assert got == [v for _, _, v in PAIRS], method
        assert proc.exitcode == 0


def test_a_hang_costs_at_most_the_budget_and_the_pool_recovers() -> None:
    pool = SymbolicPool(max_workers=1)
    try:
        assert pool.call({"op": "ping"}) == {"ok": True}
        start = time.monotonic()
        assert pool.call({"op": "sleep", "seconds": 30}, budget=0.5) is None
        assert time.monotonic() - start < 5
        assert pool.timeouts == 1
        assert pool.call({"op": "ping"}, budget=60) == {"ok": True}  # a fresh worker
    finally:
        pool.close()


def test_timeout_gives_undecided() -> None:
    pool = SymbolicPool(max_workers=1)
    try:
        pool.call({"op": "ping"})
        # a tiny budget no sympy parse can meet (a fresh expression: nothing cached)
        result = check("x^{17}+3x^{5}-x+11", "\\boxed{11-x+3x^{5}+x^{17}}", budget=0.001,
                       pool=pool)
        assert (result.verdict, result.label) == ("undecided", "timeout")
        assert result.reason.startswith("timeout")
        assert check("x^{17}+3x^{5}-x+11", "\\boxed{11-x+3x^{5}+x^{17}}", pool=pool).correct
    finally:
        pool.close()


def test_a_worker_that_cannot_start_gives_undecided_not_a_crash(tmp_path) -> None:
    for python in (str(tmp_path / "no-such-python"), "/bin/false"):
        pool = SymbolicPool(max_workers=1, startup_timeout=10, python=python)
        result = check("x^{13}+1", "\\boxed{1+x^{13}}", pool=pool)
        assert (result.verdict, result.label) == ("undecided", "error"), python
        assert "worker" in result.reason
