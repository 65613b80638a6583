"""A quiet terminal: third-party warnings, logs and progress bars of a run go to RUN/run.log,
not the screen, unless -v; the stage bars and a failure's cause stay on the screen."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

HELLO = Path(__file__).resolve().parents[1] / "examples" / "dualcurate-hello" / "recipe.toml"
NOISE = ["noisy tqdm bar", "NoisyFutureWarning text", "noisy library log", "noisy fd write",
         "noisy child process"]


@pytest.fixture
def noisy_filter(monkeypatch):
    """The hello filter, made to print as third-party libraries do: a tqdm bar, a
    FutureWarning, a library logger whose handler took the terminal stream at import time, a
    write to file descriptor 2 (C code) and a child process writing to its stderr."""
    pytest.importorskip("dualcurate_hello")
    from tqdm import tqdm

    from dualcurate_hello.stages import AnswerLengthFilter

    lib = logging.getLogger("noisy_lib")
    lib.setLevel(logging.WARNING)
    handler = logging.StreamHandler(sys.__stderr__)
    lib.addHandler(handler)
    lib.propagate = False
    original = AnswerLengthFilter.process

    def process(self, rows, ctx):
        for _ in tqdm(range(3), desc="noisy tqdm bar"):
            pass
        warnings.warn("NoisyFutureWarning text", FutureWarning, stacklevel=1)
        lib.warning("noisy library log")
        os.write(2, b"noisy fd write\n")
        subprocess.run([sys.executable, "-c",
                        "import sys; sys.stderr.write('noisy child process\\n')"], check=True)
        return original(self, rows, ctx)

    monkeypatch.setattr(AnswerLengthFilter, "process", process)
    yield
    lib.removeHandler(handler)


def _screen(result, capfd) -> str:
    captured = capfd.readouterr()
    return result.stdout + result.stderr + captured.out + captured.err


def test_third_party_output_goes_to_the_run_log(noisy_filter, run_cli, capfd):
    result = run_cli("run", str(HELLO), "--out", "out", "--no-report")
    assert result.exit_code == 0, result.stderr
    screen = _screen(result, capfd)
    for text in NOISE:
        assert text not in screen, text
    assert "20/20" in result.stderr and "rows out" in result.stderr  # bars and table stay
    log = (result.cwd / "out" / "run.log").read_text()
    for text in NOISE:
        assert text in log, text
    # the terminal still works after the run: output goes where it went before
    os.write(2, b"after the run\n")
    assert "after the run" in capfd.readouterr().err


def test_verbose_keeps_it_on_the_screen(noisy_filter, run_cli, capfd):
    result = run_cli("-v", "run", str(HELLO), "--out", "out", "--no-report")
    assert result.exit_code == 0, result.stderr
    screen = _screen(result, capfd)
    for text in NOISE:
        if "Warning" not in text:  # pytest records warnings instead of showing them
            assert text in screen, text
    assert not (result.cwd / "out" / "run.log").exists()


def test_a_failure_still_prints_its_cause(monkeypatch, run_cli, capfd):
    pytest.importorskip("dualcurate_hello")
    from dualcurate_hello.stages import AnswerLengthFilter

    def process(self, rows, ctx):
        warnings.warn("NoisyFutureWarning text", FutureWarning, stacklevel=1)
        raise ValueError("the filter broke on purpose")

    monkeypatch.setattr(AnswerLengthFilter, "process", process)
    result = run_cli("run", str(HELLO), "--out", "out", "--no-report")
    assert result.exit_code != 0
    screen = _screen(result, capfd)
    assert "the filter broke on purpose" in " ".join(screen.split())
    assert "NoisyFutureWarning" not in screen
    assert "run.log" in screen
    assert "NoisyFutureWarning" in (result.cwd / "out" / "run.log").read_text()


@pytest.mark.slow
def test_sft_run_is_quiet(run_cli, tiny_lm_dir, capfd):
    """The real thing: TRL's "Tokenizing train dataset" bars, transformers' FutureWarnings
    and weight-loading bars stay off the screen of an SFT run, and are in run.log."""
    pytest.importorskip("dualcurate_trl")
    recipe = Path(run_cli("plugins").cwd) / "r.toml"
    recipe.write_text(f"""
[run]
name = "q"
shard_size = 8
[source]
use = "hello"
n = 16
[train]
use = "sft"
model = "{tiny_lm_dir}"
mode = "short"
max_steps = 1
per_device_train_batch_size = 4
plot = false
max_length = 64
""")
    capfd.readouterr()
    result = run_cli("run", str(recipe), "--out", "out", "--no-report")
    assert result.exit_code == 0, result.stderr
    screen = _screen(result, capfd)
    for text in ("Tokenizing train dataset", "it/s", "examples/s", "FutureWarning"):
        assert text not in screen, text
    assert "train" in result.stderr  # the stage bar and the table are still there
    log = (result.cwd / "out" / "run.log").read_text()
    assert "Tokenizing train dataset" in log


def test_stage_bar_counts_requests_apart_from_rows():
    """One bar per stage: done/total over rows and requests (for the ETA), the requests on
    their own, tokens/s and errors."""
    import io

    from rich.console import Console

    from dualcurate.cli import _make_progress
    from dualcurate.progress import RichProgress

    progress = _make_progress()
    out = Console(file=io.StringIO(), width=160, force_terminal=False)
    bar = RichProgress(progress, "distill")
    bar.start(4, unit="rows")
    bar.reserve(10)                       # 10 requests announced
    bar.expect(4)                         # 4 of them about to be sent
    bar.advance_requests(3, tokens=300)   # 3 answered
    bar.advance_requests(1, errors=1)
    bar.release(2)                        # 2 announced requests will not be sent
    bar.advance(2)                        # 2 rows committed
    assert (bar.requests_done, bar.requests_total) == (4, 8)
    assert (bar.done, bar.total) == (6, 12) and bar.errors == 1 and bar.tokens == 300
    out.print(progress.get_renderable())
    text = out.file.getvalue()
    assert "6/12" in text and "4/8 req" in text and "tok/s" in text and "errors 1" in text


def test_validate_holds_third_party_warnings_unless_verbose(run_cli, monkeypatch):
    """`curate validate` builds configs (TRL's warn); their warnings are one note, -v shows
    them."""
    pytest.importorskip("dualcurate_hello")
    from dualcurate_hello.stages import AnswerLengthFilter

    def preflight(self, host):
        warnings.warn("NoisyFutureWarning text", FutureWarning, stacklevel=1)
        return []

    monkeypatch.setattr(AnswerLengthFilter, "preflight", preflight)
    quiet = run_cli("validate", str(HELLO))
    assert quiet.exit_code == 0, quiet.stderr
    assert "NoisyFutureWarning text" not in quiet.stdout + quiet.stderr
    assert "1 third-party warning(s)" in quiet.stderr and "-v shows them" in quiet.stderr
    loud = run_cli("-v", "validate", str(HELLO))
    assert loud.exit_code == 0 and "third-party warning(s)" not in loud.stderr
