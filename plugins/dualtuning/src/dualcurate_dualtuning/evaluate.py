"""Evaluating a model in both modes on held-out rows, through any engine.

Greedy decoding (temperature 0) with a per-mode token budget; each response is scored against
the gold answer by the recipe's verifier, a registered verifier stage used by name (the run's
verify stage: ``rule-verify`` by default, ``compass-judge``'s cascade when the recipe uses it;
answer rules only). A failed request counts as wrong and is reported, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dualcurate.chat import ChatRequest
from dualcurate.context import StageContext, recipe_verifier
from dualcurate.errors import DualcurateError
from dualcurate.recipe import EngineRef, VerifierRef
from dualcurate.sampling import SamplingParams
from dualcurate_dualtuning.blind import BlankImages, blank_messages
from dualcurate_dualtuning.data import MODES, SCORE_KEY, Mode, ModePrompts

Scorer = Callable[[dict[str, Any], str], bool]




class VerifierScorer:
    """``is_correct(row, response)`` through a verifier stage made by registered name
    (a :class:`VerifierRef` resolved through ``ctx``); :meth:`score` scores a batch in one call
    of the stage. The gold answer, its type and a multiple-choice row's options refine the
    comparison; the stage's structure rules are off (answers are scored, as ``check``)."""

    def __init__(self, ctx: StageContext, name: str | None = None,
                 options: dict[str, Any] | None = None):
        if name is None:
            name, options = recipe_verifier(ctx)
        self.ctx, self.name, self.options = ctx, name, dict(options or {})
        self._stage: Any = None

    def stage(self) -> Any:
        if self._stage is None:
            ref = VerifierRef.model_validate({**self.options, "use": self.name})
            try:
                cls = self.ctx.resolve(ref)  # loads its entry point on first need
            except DualcurateError as exc:
                raise DualcurateError(
                    f"dual-tuning scores answers with the verifier {self.name!r}, which is not "
                    f"available ({exc}); install dualcurate-verify (pip install -e "
                    f"plugins/verify)") from exc
            stage = cls(ref.options)
            if hasattr(stage, "answer_only"):
                stage.answer_only = True
            stage.setup(self.ctx)
            self._stage = stage
        return self._stage

    def score(self, pairs: list[tuple[dict[str, Any], str]]) -> list[bool]:
        if not pairs:
            return []
        rows = [{"id": str(row.get("id", i)), "answer": str(row["answer"]),
                 "question": row.get("question") or "", "answer_type": row.get("answer_type"),
                 "choices": list(row.get("choices") or []), "source": row.get("source"),
                 "traces": [{"text": response}]}
                for i, (row, response) in enumerate(pairs)]
        out = self.stage().process(rows, self.ctx)
        return [(r.get("traces") or [{}])[0].get("verdict") == "correct" for r in out]

    def __call__(self, row: dict[str, Any], response: str) -> bool:
        return self.score([(row, response)])[0]

    def close(self) -> None:
        if self._stage is not None:
            self._stage.teardown()
            self._stage = None


def default_scorer(ctx: StageContext | None = None) -> VerifierScorer:
    """The recipe's verifier as a scorer (``rule-verify`` without a run)."""
    return VerifierScorer(ctx if ctx is not None else StageContext.ephemeral("evaluate"))


@dataclass
class ModelScores:
    """Accuracy (percent) per group and mode, with counts and failures; ``blind``: the same
    with every image blank, for the groups evaluated blind (:mod:`~dualcurate_dualtuning.blind`),
    with its own failures and truncations."""

    model: str
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> S/L -> %
    n_eval: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    truncated: dict[str, int] = field(default_factory=lambda: {"S": 0, "L": 0})
    blind: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> S/L -> %
    blind_failed: int = 0
    blind_truncated: dict[str, int] = field(default_factory=lambda: {"S": 0, "L": 0})

    def get(self, group: str, mode: Mode) -> float:
        return self.accuracy[group][SCORE_KEY[mode]]


def has_images(rows: list[dict[str, Any]]) -> bool:
    """Whether any of ``rows`` has an image (so a blind evaluation can tell it something)."""
    return any(row.get("images") for row in rows)


def evaluate_model(ctx: StageContext, engine_ref: EngineRef, model: str,
                   eval_rows: dict[str, list[dict[str, Any]]], prompts: ModePrompts,
                   max_tokens: dict[Mode, int], seed: int,
                   scorer: Scorer | None = None, blind: bool = False) -> ModelScores:
    """Evaluate ``model`` in both modes on every group's eval rows, through the engine
    ``engine_ref`` names with its options (``model`` replaced).

    ``blind``: also evaluate, in the same engine session and the same ``generate`` call per
    mode, every group whose eval rows have images with each image replaced by a blank one of
    its size (``ModelScores.blind``); a row of such a group without images keeps its verdict.

    The engine is built for this model, used for both modes, then closed (a judge evaluates
    several models one after another and must not hold them all in memory).
    """
    own_scorer = scorer is None
    scorer = scorer or default_scorer(ctx)
    flat = [(group, row) for group, rows in eval_rows.items() for row in rows]
    blind_groups = {g for g, rows in eval_rows.items() if blind and has_images(rows)}
    pictured = [i for i, (group, row) in enumerate(flat)
                if group in blind_groups and row.get("images")]
    blank = BlankImages(ctx.images)
    requests: dict[Mode, list[ChatRequest]] = {}
    for mode in MODES:  # every request before the model loads: an unreadable image fails fast
        real = [ChatRequest(messages=prompts.messages(row, mode), n=1,
                            request_id=f"{row['id']}:{mode}") for _, row in flat]
        requests[mode] = real + [
            ChatRequest(messages=blank_messages(real[i].messages, blank), n=1,
                        request_id=f"{flat[i][1]['id']}:{mode}:blind") for i in pictured]
    engine = ctx.resolve(engine_ref)({**engine_ref.options, "model": model})
    engine.setup(ctx)
    scores = ModelScores(model=model)
    correct: dict[tuple[str, str], int] = {}
    blind_correct: dict[tuple[str, str], int] = {}
    try:
        for mode in MODES:
            key = SCORE_KEY[mode]
            sampling = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=max_tokens[mode],
                                      seed=seed)
            ctx.progress.start(0, unit="requests")  # generate counts the requests
            results = ctx.generate(engine, requests[mode], sampling)
            rows = [row for _, row in flat] + [flat[i][1] for i in pictured]
            answered: list[tuple[int, dict[str, Any], str]] = []
            for j, (row, completions) in enumerate(zip(rows, results, strict=True)):
                completion = completions[0]
                is_blind = j >= len(flat)
                if not completion.ok:
                    if is_blind:
                        scores.blind_failed += 1
                    else:
                        scores.failed += 1
                    continue
                if completion.finish_reason == "length":
                    (scores.blind_truncated if is_blind else scores.truncated)[key] += 1
                answered.append((j, row, completion.text))
            if isinstance(scorer, VerifierScorer):  # one batch through the verifier stage
                verdicts = scorer.score([(row, text) for _, row, text in answered])
            else:
                verdicts = [scorer(row, text) for _, row, text in answered]
            ok = [False] * len(rows)
            for (j, _, _), verdict in zip(answered, verdicts, strict=True):
                ok[j] = bool(verdict)
            blind_ok = ok[:len(flat)]  # a row without images answers blind as it did
            for i, verdict in zip(pictured, ok[len(flat):], strict=True):
                blind_ok[i] = verdict
            for i, (group, _) in enumerate(flat):
                correct[(group, key)] = correct.get((group, key), 0) + ok[i]
                if group in blind_groups:
                    blind_correct[(group, key)] = blind_correct.get((group, key), 0) + blind_ok[i]
    finally:
        engine.close()
        if own_scorer and isinstance(scorer, VerifierScorer):
            scorer.close()
    for group, rows in eval_rows.items():
        n = len(rows)
        scores.n_eval[group] = n
        scores.accuracy[group] = {
            SCORE_KEY[mode]: (100.0 * correct.get((group, SCORE_KEY[mode]), 0) / n if n else 0.0)
            for mode in MODES}
        if group in blind_groups:
            scores.blind[group] = {
                SCORE_KEY[mode]: 100.0 * blind_correct.get((group, SCORE_KEY[mode]), 0) / n
                for mode in MODES}
    return scores
