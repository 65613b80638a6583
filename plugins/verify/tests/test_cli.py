"""``curate check``: direct use, JSON lines, bad input, and the judge over a loopback
OpenAI-compatible server (aiohttp) through the ``openai`` engine."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from dualcurate_verify.judge import RETRY_PROMPT


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_check_gold_and_response(run_cli) -> None:
    result = run_cli("check", "--gold", "42", "--response", "42")
    assert result.exit_code == 0, result.stderr
    (obj,) = _lines(result.stdout)
    assert {"verdict", "method", "reason"} <= set(obj)
    assert (obj["verdict"], obj["method"]) == ("correct", "rule")


def test_check_with_question_and_choices(run_cli) -> None:
    result = run_cli("check", "--gold", "B", "--response", "<think>hm</think>45°",
                     "--question", "Which angle?", "--choice", "30°", "--choice", "45°")
    assert _lines(result.stdout)[0]["verdict"] == "correct"


def test_check_jsonl_keeps_order(run_cli, tmp_path: Path) -> None:
    items = [{"gold": "42", "response": "\\boxed{42}"}, {"gold": 7, "response": "8"},
             {"gold": "B", "response": "A, B, C, D", "question": "pick one"},
             {"gold": "x+1", "response": "The answer is $1+x$."}]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(i) for i in items[:2]) + "\n\n"
                    + "\n".join(json.dumps(i) for i in items[2:]) + "\n")
    result = run_cli("check", "--jsonl", str(path))
    assert result.exit_code == 0, result.stderr
    assert [o["verdict"] for o in _lines(result.stdout)] == ["correct", "incorrect", "incorrect",
                                                             "correct"]


@pytest.mark.parametrize(("content", "needle"), [
    ('{"gold": "1", "response": "1"}\n{"gold": "1", "resp\n', ":2: not valid JSON"),
    ('{"gold": "1"}\n', ":1: missing key(s) response"),
    ('[1, 2]\n', ":1: expected a JSON object"),
])
def test_check_jsonl_bad_lines(run_cli, tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    result = run_cli("check", "--jsonl", str(path))
    assert result.exit_code == 2
    assert needle in result.stderr.replace("\n", "")
    assert result.stdout == ""


def test_check_usage_errors(run_cli, tmp_path: Path) -> None:
    missing = run_cli("check", "--jsonl", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    assert run_cli("check", "--gold", "1").exit_code == 2
    judge_without_plugin = run_cli("check", "--gold", "1", "--response", "1",
                                   "--judge-engine", "openai")
    assert judge_without_plugin.exit_code == 2
    assert "--plugin compass-judge" in judge_without_plugin.stderr
    plugin_without_engine = run_cli("--plugin", "compass-judge", "check", "--gold", "1",
                                    "--response", "1")
    assert plugin_without_engine.exit_code == 2
    unknown_engine = run_cli("--plugin", "compass-judge", "check", "--gold", "1", "--response",
                             "1", "--judge-engine", "nope", "--judge-option", "model=m")
    assert unknown_engine.exit_code == 2 and "nope" in unknown_engine.stderr


# the judge over loopback -------------------------------------------------------------------
class JudgeServer:
    """A scripted OpenAI-compatible chat server: its label depends on the candidate answer."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def label_for(body: dict) -> str:
        messages = body["messages"]
        if messages[-1]["content"] == RETRY_PROMPT:
            return "still thinking"
        user = messages[1]["content"]
        candidate = re.search(r"\[\[CANDIDATE FINAL ANSWER \w+\]\]\n(.*)\n\[\[/CANDIDATE",
                              user, re.S).group(1)
        if "Evelyn" in candidate:
            return "Both name Evelyn.\nFinal Judgment: \\boxed{A}"
        if "Carla" in candidate:
            return "Different person.\nFinal Judgment: B"
        return "I am not sure what to say."  # unparseable, every time

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        text = self.label_for(body)
        return web.json_response({
            "id": "judge", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> JudgeServer:
        self._thread.start()
        assert self._ready.wait(30), "the loopback judge server did not start"
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    server = JudgeServer().start()
    yield server
    server.stop()


def test_judge_joins_the_cascade_over_loopback(run_cli, tmp_path: Path, judge_server) -> None:
    items = [{"gold": "42", "response": "42"},                            # rules: correct
             {"gold": "Evelyn", "response": "It was Evelyn, by far", "question": "Who?"},
             {"gold": "Evelyn", "response": "Carla was faster overall", "question": "Who?"},
             {"gold": "Evelyn", "response": "Someone in the red car", "question": "Who?"}]
    path = tmp_path / "judge.jsonl"
    path.write_text("\n".join(json.dumps(i) for i in items))
    result = run_cli("--plugin", "compass-judge", "check", "--jsonl", str(path),
                     "--judge-engine", "openai",
                     "--judge-option", f"base_url=http://127.0.0.1:{judge_server.port}/v1",
                     "--judge-option", "model=scripted-judge",
                     "--judge-option", "max_retries=0")
    assert result.exit_code == 0, result.stderr
    got = [(o["verdict"], o["method"], o["label"]) for o in _lines(result.stdout)]
    assert got == [("correct", "rule", "number"), ("correct", "judge", "A"),
                   ("incorrect", "judge", "B"), ("invalid", "judge", "unparseable")]
    # 3 undecided answers reached the judge, the unparseable one twice (one retry)
    assert len(judge_server.requests) == 4
    assert all(r["model"] == "scripted-judge" for r in judge_server.requests)
    assert all("<think>" not in json.dumps(r) for r in judge_server.requests)
