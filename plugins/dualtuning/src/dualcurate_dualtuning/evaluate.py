"""Evaluating a model in both modes on held-out rows, through any engine.

Greedy decoding (temperature 0) with a per-mode token budget; each response is scored against
the gold answer by ``dualcurate_verify.check`` (the same rules that verified the traces). A
failed request counts as wrong and is reported, never silently dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dualcurate.context import StageContext
from dualcurate.engine import ChatRequest, SamplingParams
from dualcurate.errors import DualcurateError
from dualcurate_dualtuning.data import MODES, SCORE_KEY, Mode, ModePrompts
from dualcurate_dualtuning.hosting import component, host_of

Scorer = Callable[[dict[str, Any], str], bool]


@functools.cache
def default_scorer() -> Scorer:
    """``is_correct(row, response)`` backed by ``dualcurate_verify.check`` (the gold answer,
    its type and the options of a multiple-choice row refine the comparison)."""
    try:
        from dualcurate_verify import check
    except ImportError as exc:
        raise DualcurateError(
            "dual-tuning scores answers with dualcurate_verify.check, which is not importable "
            f"({exc}); install dualcurate-verify (pip install -e plugins/verify)") from exc

    def is_correct(row: dict[str, Any], response: str) -> bool:
        result = check(str(row["answer"]), response, row.get("question"),
                       answer_type=row.get("answer_type"), choices=row.get("choices") or None)
        return result.verdict == "correct"

    return is_correct


@dataclass
class ModelScores:
    """Accuracy (percent) per group and mode, with counts and failures."""

    model: str
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> S/L -> %
    n_eval: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    truncated: dict[str, int] = field(default_factory=lambda: {"S": 0, "L": 0})

    def get(self, group: str, mode: Mode) -> float:
        return self.accuracy[group][SCORE_KEY[mode]]


def evaluate_model(ctx: StageContext, engine_name: str, engine_options: dict[str, Any],
                   model: str, eval_rows: dict[str, list[dict[str, Any]]],
                   prompts: ModePrompts, max_tokens: dict[Mode, int], seed: int,
                   scorer: Scorer | None = None) -> ModelScores:
    """Evaluate ``model`` in both modes on every group's eval rows.

    The engine is built for this model, used for both modes, then closed (a judge evaluates
    several models one after another and must not hold them all in memory).
    """
    scorer = scorer or default_scorer()
    engine_cls = component(host_of(ctx), "engine", engine_name)
    engine = engine_cls({**engine_options, "model": model})
    engine.setup(ctx)
    scores = ModelScores(model=model)
    flat = [(group, row) for group, rows in eval_rows.items() for row in rows]
    correct: dict[tuple[str, str], int] = {}
    try:
        for mode in MODES:
            sampling = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=max_tokens[mode],
                                      seed=seed)
            requests = [ChatRequest(messages=prompts.messages(row, mode), n=1,
                                    request_id=f"{row['id']}:{mode}") for _, row in flat]
            ctx.progress.start(0, unit="requests")  # generate counts the requests
            results = ctx.generate(engine, requests, sampling)
            for (group, row), completions in zip(flat, results, strict=True):
                completion = completions[0]
                key = (group, SCORE_KEY[mode])
                correct.setdefault(key, 0)
                if not completion.ok:
                    scores.failed += 1
                    continue
                if completion.finish_reason == "length":
                    scores.truncated[SCORE_KEY[mode]] += 1
                if scorer(row, completion.text):
                    correct[key] += 1
    finally:
        engine.close()
    for group, rows in eval_rows.items():
        n = len(rows)
        scores.n_eval[group] = n
        scores.accuracy[group] = {
            SCORE_KEY[mode]: (100.0 * correct.get((group, SCORE_KEY[mode]), 0) / n if n else 0.0)
            for mode in MODES}
    return scores
