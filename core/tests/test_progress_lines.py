"""Progress in a log file (a console that is not a terminal): plain lines of words, complete
whatever the numbers, instead of a rich bar drawn once at the end and cut to 80 columns."""

from __future__ import annotations

from dualcurate.progress import LineProgress, StageProgress


def test_a_line_holds_every_count_in_full():
    progress = StageProgress()
    progress.start(15_000, unit="rows")
    progress.reserve(40_000)
    progress.expect(30_000)
    progress.advance_requests(12_345, tokens=1_000_000, errors=2)
    progress.advance(1_500)
    line = progress.describe("filter")
    assert line.startswith("filter: 1,500/15,000 rows, 12,345/40,000 requests, 25% done, ")
    assert "tokens/s" in line and ", 2 errors, " in line and " elapsed" in line
    assert "about " in line and " left" in line  # 25% done: an estimate of what is left
    progress.finish()
    done = progress.describe("filter", ended=True)
    assert done.startswith("filter done: 15,000/15,000 rows, 40,000/40,000 requests, ")
    assert "took 0:00:0" in done and "left" not in done and "% done" not in done


def test_no_estimate_from_the_first_few_percent():
    progress = StageProgress()
    progress.start(1000)
    progress.advance(10)
    line = progress.describe("distill")
    assert line.startswith("distill: 10/1,000 rows, 1% done, 0 errors, ") and "left" not in line


def test_a_stage_that_counts_requests_only():
    progress = StageProgress()
    progress.start(0, unit="requests")
    progress.expect(30)
    progress.advance_requests(30, cached=True)
    line = progress.describe("judge")
    assert line.startswith("judge: 30/30 requests (30 from the cache), 100% done, 0 errors, ")
    assert "rows" not in line
    progress.start(0, unit="requests")  # a new phase counts from zero
    progress.expect(8)
    assert progress.describe("judge").startswith("judge: 0/8 requests, 0% done")


def test_a_source_without_a_total_shows_its_count():
    progress = StageProgress()
    progress.start(0)
    progress.advance(256)
    line = progress.describe("source")
    assert line.startswith("source: 256 rows, 0 errors, ") and "%" not in line


def test_line_progress_says_start_progress_and_end():
    lines: list[str] = []
    progress = LineProgress("source", lines.append, interval=0)
    progress.start(0)  # nothing counted yet: no line
    progress.interval = 3600
    progress.add_total(20)
    progress.advance(8)
    assert lines == ["source: started"]  # the interval has not passed: nothing more yet
    progress.interval = 0
    progress.advance(2)
    assert lines[-1].startswith("source: 10/20 rows, 50% done, 0 errors, ")
    progress.finish()
    progress.stop()
    assert lines[-1].startswith("source done: 20/20 rows, 0 errors, took ")
    assert len(lines) == 3


def test_a_stage_that_fails_says_where_it_stopped():
    lines: list[str] = []
    progress = LineProgress("train", lines.append, interval=3600)
    progress.start(87)
    progress.advance(40)
    progress.stop()
    assert lines[-1].startswith("train: 40/87 rows, 45% done, 0 errors, ")
    assert lines[-1].endswith("(stopped)")


def test_answered_requests_count_in_the_requests_column(tmp_path):
    """Fresh answers and cached ones both count as requests done (fresh ones were counted as
    rows only: the demo's log ended with "filter 158/158 0/68 req")."""
    from dualcurate.cache import RequestCache, generate_cached
    from dualcurate.chat import ChatRequest, Completion
    from dualcurate.engine import Engine, EngineConfig
    from dualcurate.sampling import SamplingParams

    class Echo(Engine):
        name = "echo"
        Config = EngineConfig

        def generate(self, requests, sampling, on_result=None):
            for i, req in enumerate(requests):
                on_result(i, [Completion(text="a", finish_reason="stop", completion_tokens=2)
                              for _ in req.indices()])

    cache = RequestCache(tmp_path / "c.sqlite")
    requests = [ChatRequest(messages=[{"role": "user", "content": f"q{i}"}], n=2)
                for i in range(5)]
    progress = StageProgress()
    progress.start(0, unit="requests")
    generate_cached(Echo({"model": "m"}), requests[:3], SamplingParams(), cache, progress)
    assert (progress.requests_done, progress.requests_total, progress.done) == (3, 3, 3)
    generate_cached(Echo({"model": "m"}), requests, SamplingParams(), cache, progress)
    assert (progress.requests_done, progress.requests_total, progress.cached) == (8, 8, 3)
    assert progress.tokens == 2 * 2 * 5
