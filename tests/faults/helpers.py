"""Shared pieces of the fault suite: a loopback teacher server that counts what reaches it,
recipes over a local JSON Lines dataset, and ``curate`` as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dualcurate_openai.testing import Reply, ScriptedServer, chat_response

CURATE = Path(sys.executable).parent / "curate"
SECRET = "sk-test-SECRET123"
ITEM = re.compile(r"Item (\d+):")

Handler = Callable[[dict[str, Any], dict[str, str], int], Any]


def prompt_text(body: dict[str, Any]) -> str:
    """All text of a chat request body (system and user turns)."""
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(p.get("text") or "" for p in content or [] if p.get("type") == "text")
    return "\n".join(parts)


def item_of(body: dict[str, Any]) -> int:
    """The item number a distill request is about (``Item N:`` in the question)."""
    match = ITEM.search(prompt_text(body))
    assert match is not None, "a request without an item number reached the teacher"
    return int(match.group(1))


def teacher_reply(body: dict[str, Any], finish_reason: str = "stop") -> Reply:
    """A well-formed teacher answer: the right sum for ``Item N: what is N plus N?``."""
    n = item_of(body)
    text = f"<think>{n} plus {n} is {2 * n}.</think>\n<answer>{2 * n}</answer>"
    return Reply(body=chat_response(text, model=body.get("model", ""),
                                    finish_reason=finish_reason))


def teacher(body: dict[str, Any], headers: dict[str, str], number: int) -> Reply:
    return teacher_reply(body)


def write_questions(path: Path, n: int = 100, extra: list[dict[str, Any]] | None = None) -> Path:
    """``n`` distinct arithmetic questions as JSON Lines (plus ``extra`` records)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"question": f"Item {i}: what is {i} plus {i}?", "answer": str(2 * i)}
               for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*records, *(extra or [])]))
    return path


def distill_recipe(path: Path, data: Path, base_url: str, *, shard_size: int = 16,
                   distill: str = "", engine: str = "", tail: str = "") -> Path:
    """hf-dataset (JSON Lines) -> openai-distill against ``base_url``."""
    path.write_text(f"""
[run]
shard_size = {shard_size}

[source]
use = "hf-dataset"
[[source.sources]]
name = "items"
jsonl = "{data}"

[distill]
use = "openai-distill"
max_tokens = 64
seed = 0
{distill}
[distill.engine]
model = "teacher"
max_concurrency = 4
base_url = "{base_url}"
api_key_env = "FAULT_TEST_API_KEY"
backoff_initial = 0.01
backoff_max = 0.05
{engine}
{tail}
""")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a ``curate`` subprocess: no ambient endpoint, key or proxy."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().endswith("_PROXY") and not k.startswith("OPENAI_")}
    env.update(NO_PROXY="127.0.0.1,localhost", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               COLUMNS="200")
    env.update(extra)
    return env


def curate(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``curate`` console script."""
    return subprocess.run([str(CURATE), *args], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def rows(run_dir: Path, stage: str) -> list[dict[str, Any]]:
    """Every committed row of a stage, shard by shard (read through the store: a map stage's
    shard holds only the columns it changed)."""
    from dualcurate import RunStore

    return [r for t in RunStore(run_dir, create=False).iter_tables(stage) for r in t.to_pylist()]


def cached_outputs(cache: Path) -> int:
    """Rows in the request cache's outputs table (read-only, safe while a run writes)."""
    if not cache.exists():
        return 0
    db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        db.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Gate:
    """Lets the first ``limit`` requests through and holds the rest until released (then
    answers them 503): the test kills the client between the two."""

    def __init__(self, limit: int, reply: Handler = teacher):
        self.limit = limit
        self.reply = reply
        self.answered = 0
        self.held = 0
        self.released = False

    async def __call__(self, body: dict[str, Any], headers: dict[str, str], number: int) -> Reply:
        import asyncio

        if self.answered < self.limit:
            self.answered += 1
            return self.reply(body, headers, number)
        self.held += 1
        for _ in range(3000):  # bounded: at most 150 s
            if self.released:
                break
            await asyncio.sleep(0.05)
        return Reply(status=503, body={"error": {"message": "gone"}})


def start_server(handler: Handler) -> ScriptedServer:
    return ScriptedServer(handler).start()


def base_recipe(data: Path, base_url: str, n_verify: bool = True) -> dict[str, Any]:
    """hf-dataset -> openai-distill -> rule-verify, as a recipe dict (in-process runs)."""
    recipe: dict[str, Any] = {
        "run": {"shard_size": 8},
        "source": {"use": "hf-dataset", "sources": [{"name": "items", "jsonl": str(data)}]},
        "distill": {"use": "openai-distill", "max_tokens": 64, "seed": 0,
                    "engine": {"model": "teacher", "base_url": base_url, "max_retries": 0}},
    }
    if n_verify:
        recipe["verify"] = {"use": "rule-verify", "workers": 1}
    return recipe


def run_pipeline(recipe: dict[str, Any], out: Path) -> list[str]:
    """Run a recipe dict in-process with only the plugins it names; return the log lines."""
    import copy

    from dualcurate import Pipeline, PluginHost, load_recipe

    lines: list[str] = []
    host = PluginHost(autoload=False)
    Pipeline(load_recipe(copy.deepcopy(recipe)), host=host).run(out, log=lines.append)
    return lines
