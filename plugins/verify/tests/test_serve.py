"""Plumbing of the judge against a real OpenAI-compatible server: ``transformers serve`` with a
tiny random model on 127.0.0.1, through the ``openai`` engine. A random model writes noise, so
the point is the path (request out, label parsed or retried, verdict recorded), not the label."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualcurate import PluginHost, Sample, StageContext
from dualcurate_verify.judge import LABEL_VERDICTS, CompassJudge

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_tiny_lm(tiny_lm_dir: Path) -> Iterator[str]:
    port = _free_port()
    cli = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([str(cli), "serve", str(tiny_lm_dir), "--host", "127.0.0.1",
                             "--port", str(port), "--device", "cpu", "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("transformers serve did not become healthy in 180 s")
            time.sleep(1)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_judge_through_transformers_serve(served_tiny_lm: str, tiny_lm_dir: Path, tmp_path: Path) -> None:
    host = PluginHost(autoload=False, select=["openai"])
    ctx = StageContext.ephemeral("verify", root=tmp_path / "run", host=host)
    row = Sample(source="t", question="Who was faster?", answer="Evelyn").to_row()
    row["traces"] = [{"text": "<think>compare</think>It was Evelyn, clearly."}]
    stage = CompassJudge({"require_think": False, "max_tokens": 16,
                          "engine": {"use": "openai", "model": str(tiny_lm_dir),
                                     "base_url": served_tiny_lm, "max_retries": 0,
                                     "timeout": 120}})
    assert stage.preflight(host) == []
    try:
        out = stage.process([row], ctx)
    finally:
        ctx.close()
    trace = out[0]["traces"][0]
    assert trace["method"] == "judge"
    assert ctx.stats.sent >= 1 and ctx.stats.failed == 0, ctx.stats
    if trace["label"] in LABEL_VERDICTS:
        assert trace["verdict"] == LABEL_VERDICTS[trace["label"]]
    else:  # noise: retried once, then invalid, never correct
        assert (trace["verdict"], trace["label"]) == ("invalid", "unparseable")
        assert ctx.stats.sent == 2


CV_STYLE_PROMPT = ("Grade the candidate. Reply A (CORRECT), B (INCORRECT) or C (INVALID).\n"
                   "<Original Question Begin>:\n{question}\n<Original Question End>\n"
                   "<Standard Answer Begin>:\n{gold_answer}\n<Standard Answer End>\n"
                   "<Candidate's Answer Begin>: \n{llm_response}\n<Candidate's Answer End>\n"
                   "Judging the correctness of the candidate's answer:\n")


@pytest.mark.parametrize(("judge_format", "prompt_file"),
                         [("plain", False), ("cot", False), ("plain", True)])
def test_both_formats_parse_or_retry_and_a_rerun_sends_nothing(
        served_tiny_lm: str, tiny_lm_dir: Path, tmp_path: Path, judge_format: str,
        prompt_file: bool) -> None:
    """Each format against the real server: the rendered prompt goes out, the reply is parsed
    (or retried once, then invalid), and a rerun on the same request cache sends nothing and
    gives the same verdicts."""
    host = PluginHost(autoload=False, select=["openai"])
    options = {"require_think": False, "max_tokens": 12, "judge_format": judge_format,
               "engine": {"use": "openai", "model": str(tiny_lm_dir),
                          "base_url": served_tiny_lm, "max_retries": 0, "timeout": 120}}
    if prompt_file:
        path = tmp_path / "cv_prompt.txt"
        path.write_text(CV_STYLE_PROMPT)
        options["prompt_file"] = str(path)
    rows = []
    for gold, text in [("Evelyn", "<think>compare</think>It was Evelyn, clearly."),
                       ("Carla", "<think>x</think>Probably the one in the red car.")]:
        row = Sample(source="t", question="Who was faster?", answer=gold).to_row()
        row["traces"] = [{"text": text}]
        rows.append(row)

    def run() -> tuple[list[dict], int, int]:
        ctx = StageContext.ephemeral("verify", root=tmp_path / "run", host=host)
        stage = CompassJudge(options)
        assert stage.preflight(host) == []
        try:
            out = stage.process([dict(r) for r in rows], ctx)
        finally:
            ctx.close()
            ctx.cache.close()
        return out, ctx.stats.sent, ctx.stats.failed

    first, sent, failed = run()
    assert failed == 0
    retried = 0
    for row in first:
        trace = row["traces"][0]
        assert trace["method"] == "judge"
        if trace["label"] in LABEL_VERDICTS:
            assert trace["verdict"] == LABEL_VERDICTS[trace["label"]]
        else:  # noise: retried once, then invalid, never correct
            assert (trace["verdict"], trace["label"]) == ("invalid", "unparseable")
            retried += 1
    assert sent == len(rows) + retried
    again, sent_again, _ = run()
    assert sent_again == 0
    assert again == first
