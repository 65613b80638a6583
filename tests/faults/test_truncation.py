"""Item 5: a teacher answer cut at max_tokens (finish_reason=length) is marked truncated by the
distiller, invalid by the verifier, and never becomes SFT data, even when its text happens to
look complete and correct."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dualcurate_openai.testing import Reply, chat_response

from .helpers import base_recipe, item_of, rows, run_pipeline, start_server, write_questions

pytestmark = pytest.mark.faults
N = 18


def cut_teacher(body: dict[str, Any], headers: dict[str, str], number: int) -> Reply:
    """Every third item is cut mid-thought; every third plus one is cut right after a
    complete-looking, correct answer; the rest finish."""
    n = item_of(body)
    full = f"<think>{n} plus {n} is {2 * n}.</think>\n<answer>{2 * n}</answer>"
    if n % 3 == 0:
        text, reason = f"<think>{n} plus {n} is", "length"
    elif n % 3 == 1:
        text, reason = full, "length"
    else:
        text, reason = full, "stop"
    return Reply(body=chat_response(text, model=body.get("model", ""), finish_reason=reason))


def test_truncated_traces_are_marked_and_never_sft_data(tmp_path: Path) -> None:
    from dualcurate_trl.data import build_examples

    server = start_server(cut_teacher)
    try:
        recipe = base_recipe(write_questions(tmp_path / "q.jsonl", N), server.base_url)
        run_pipeline(recipe, tmp_path / "run")
    finally:
        server.stop()
    verified = rows(tmp_path / "run", "verify")
    assert len(verified) == N
    by_item = {int(r["answer"]) // 2: r for r in verified}
    for n, row in by_item.items():
        (trace,) = row["traces"]
        cut = n % 3 != 2
        assert trace["truncated"] is cut and (trace["finish_reason"] == "length") is cut
        if cut:
            assert (trace["verdict"], trace["label"]) == ("invalid", "truncated"), n
            assert row["n_verified"] == 0 and row["consistent"] is False
        else:
            assert trace["verdict"] == "correct"
        assert trace["error"] is None  # truncated is not failed: it is kept, not retried

    examples, stats = build_examples(verified, mode="long")
    kept = sorted(int(e["prompt"][-1]["content"].split("Item ")[1].split(":")[0])
                  for e in examples)
    assert kept == [n for n in range(N) if n % 3 == 2]
    assert stats.skipped == {"no correct untruncated trace": 2 * N // 3}

    # even a trace a verifier wrongly called correct is left out when it was cut off
    for row in verified:
        for trace in row["traces"]:
            trace["verdict"] = "correct"
    examples, _ = build_examples(verified, mode="long")
    assert len(examples) == N // 3
