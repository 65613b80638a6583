"""`curate run` into a log file (stderr not a terminal): the progress is plain lines of words,
complete (no rich bar drawn once at the end and cut at 80 columns with "…"), and the notes are
sentences, not Python reprs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

HELLO = Path(__file__).resolve().parents[1] / "examples" / "dualcurate-hello" / "recipe.toml"


def test_run_log_is_complete_and_reads_as_words(run_cli):
    pytest.importorskip("dualcurate_hello")
    out = "a-run-folder-whose-name-alone-is-wider-than-the-eighty-columns-rich-guesses-for-a-log"
    result = run_cli("run", str(HELLO), "--out", out, "--no-report")
    assert result.exit_code == 0, result.stderr
    log = result.stderr
    assert "…" not in log  # nothing cut
    lines = log.splitlines()
    assert not [ln for ln in lines if re.match(r"(source|filter)\s+━", ln)]  # no bar
    for stage, rows_in in (("source", 20), ("filter", 20)):
        assert f"{stage}: started" in lines
        done = next(ln for ln in lines if ln.startswith(f"{stage} done: "))
        assert re.fullmatch(rf"{stage} done: {rows_in}/{rows_in} rows, 0 errors, took "
                            r"\d+:\d\d:\d\d", done), done
    assert lines.index("source: started") < lines.index("filter: started")
    # the stage table after the progress, every column of it
    row = next(ln for ln in lines if "hello-length" in ln)
    assert re.search(r"filter\s*│\s*hello-length\s*│\s*done\s*│\s*20\s*│\s*\d+\s*│", row), row
    assert not re.search(r"[{}\[\]]", "\n".join(ln for ln in lines if ":" in ln
                                                  and "│" not in ln)), log
