"""``curate check``: verify answers directly, without a recipe or a run directory.

    curate check --gold 42 --response "42"
    curate check --jsonl answers.jsonl
    curate --plugin compass-judge check --jsonl answers.jsonl \\
        --judge-engine openai --judge-option base_url=http://127.0.0.1:8000/v1 \\
        --judge-option model=judge-model
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from dualcurate import DualcurateError

OUTPUT_KEYS = ("verdict", "method", "label", "reason", "answer")
JUDGE_PLUGIN = "compass-judge"


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; VALUE is read as JSON when it parses (numbers, true/false), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.UsageError(f"--judge-option {text!r}: expected KEY=VALUE, e.g. "
                               f"--judge-option model=my-judge")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Rows from a JSON-lines file (``-``: stdin); blank lines are skipped. Every problem
    names the file and line."""
    if path == "-":
        text = click.get_text_stream("stdin").read()
    else:
        file = Path(path)
        if not file.is_file():
            raise DualcurateError(f"--jsonl {path}: no such file; give a JSON-lines file with "
                                  f"keys gold, response and optional question")
        text = file.read_text(encoding="utf-8")
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DualcurateError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                  f"each line must be one JSON object") from None
        if not isinstance(obj, dict):
            raise DualcurateError(f"{where}: expected a JSON object with keys gold and "
                                  f"response, got {type(obj).__name__}")
        missing = [k for k in ("gold", "response") if obj.get(k) is None]
        if missing:
            raise DualcurateError(f"{where}: missing key(s) {', '.join(missing)}; each line "
                                  f"needs gold and response (question optional)")
        choices = obj.get("choices") or []
        if not isinstance(choices, list):
            raise DualcurateError(f"{where}: choices must be a list of option texts")
        items.append({"gold": str(obj["gold"]), "response": str(obj["response"]),
                      "question": None if obj.get("question") is None else str(obj["question"]),
                      "answer_type": obj.get("answer_type"), "choices": [str(c) for c in choices]})
    return items


def verify_items(items: list[dict[str, Any]], host: Any = None, judge: dict[str, Any] | None = None,
                 cache: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Run the rules (and the judge when ``judge`` holds its config) over check items."""
    from dualcurate import StageContext
    from dualcurate.cache import RequestCache
    from dualcurate_verify.judge import CompassJudge
    from dualcurate_verify.stage import RuleVerifier

    options = {"require_think": False, "symbolic_timeout": timeout}
    stage = CompassJudge({**options, **judge}) if judge is not None else RuleVerifier(options)
    if judge is not None and host is not None:
        from dualcurate.recipe import check_refs

        problems = check_refs(stage.config, host) + stage.preflight(host)
        if problems:
            raise DualcurateError("the judge cannot run: " + "; ".join(problems))
    rows = [{"id": str(i), "question": item["question"] or "", "answer": item["gold"],
             "answer_type": item["answer_type"], "choices": item["choices"],
             "traces": [{"text": item["response"]}]} for i, item in enumerate(items)]
    ctx = StageContext(stage_name="check", workdir=Path(tempfile.gettempdir()), host=host,
                       cache=RequestCache(cache) if cache else None)
    stage.setup(ctx)
    try:
        out = stage.process(rows, ctx)
    finally:
        stage.teardown()
        ctx.close()
        if ctx.cache is not None:
            ctx.cache.close()
    return [{key: row["traces"][0].get(key) for key in OUTPUT_KEYS} for row in out]


@click.command("check")
@click.option("--gold", help="The gold (reference) answer.")
@click.option("--response", help="The response to verify (may hold <think>…</think>).")
@click.option("--question", help="The question (only the judge reads it).")
@click.option("--answer-type", type=click.Choice(["multiple_choice", "number", "expression",
                                                  "text", "yes_no", "open"]),
              help="The gold answer's type, which refines the comparison (default: read "
                   "from the gold answer and --choice).")
@click.option("--choice", "choices", multiple=True, metavar="TEXT",
              help="Option text of a multiple-choice question, A first. Repeatable.")
@click.option("--jsonl", type=str, metavar="FILE",
              help="JSON lines with keys gold, response and optional question, answer_type, "
                   "choices ('-': stdin); prints one JSON object per line, in order.")
@click.option("--judge-engine", metavar="NAME", help="Engine of the judge (with --plugin "
              "compass-judge), e.g. openai.")
@click.option("--judge-option", "judge_options", multiple=True, metavar="KEY=VALUE",
              help="Option of the judge's engine, e.g. model=NAME or base_url=URL. Repeatable.")
@click.option("--cache", type=click.Path(dir_okay=False), help="SQLite file caching judge "
              "requests across calls.")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds for one symbolic (math-verify) comparison.")
@click.pass_context
def check_cmd(ctx: click.Context, gold: str | None, response: str | None,
              question: str | None, answer_type: str | None, choices: tuple[str, ...],
              jsonl: str | None, judge_engine: str | None, judge_options: tuple[str, ...],
              cache: str | None, timeout: float) -> None:
    """Verify answers against gold answers; print JSON verdicts (verdict, method, label,
    reason, answer). Rules only, unless --plugin compass-judge adds the LLM judge."""
    state = ctx.obj
    selected = list(getattr(state, "selected", []) or [])
    host = getattr(state, "host", None)
    if jsonl is not None and (gold is not None or response is not None):
        raise click.UsageError("give either --jsonl FILE or --gold/--response, not both")
    if jsonl is None and (gold is None or response is None):
        raise click.UsageError("give --gold G --response R (and optionally --question Q), "
                               "or --jsonl FILE")
    judge = None
    if JUDGE_PLUGIN in selected:
        if not judge_engine:
            raise click.UsageError("--plugin compass-judge needs --judge-engine NAME and "
                                   "--judge-option model=... (plus the engine's own options)")
        judge = {"engine": {"use": judge_engine, **dict(map(parse_option, judge_options))}}
    elif judge_engine or judge_options:
        raise click.UsageError("--judge-engine/--judge-option only apply with the judge: add "
                               "--plugin compass-judge before 'check'")
    if jsonl is not None:
        items = read_jsonl(jsonl)
    else:
        items = [{"gold": gold, "response": response, "question": question,
                  "answer_type": answer_type, "choices": list(choices)}]
    for result in verify_items(items, host=host, judge=judge, cache=cache, timeout=timeout):
        click.echo(json.dumps(result, ensure_ascii=False))
