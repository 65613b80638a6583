"""The ``difficulty`` filter: pass rates of a small proxy model, with adaptive sampling.

For every sample the proxy model (any registered engine) answers the question k =
``samples_per_question`` times (the teacher's name for the same count); each
rollout is verified; ``pass_correct`` / ``pass_drawn`` record what was observed and
``pass_rate = correct / k`` is stored only when all ``k`` rollouts were drawn. The keep rule (``pass_rate ==
0`` by default: MMFineReason's hard subset) decides ``keep``. With ``adaptive`` (the default)
rollouts are drawn in rounds of ``round_size`` and a sample stops as soon as its decision is
settled (see :mod:`dualcurate_difficulty.stopping`). Rollout ``i`` of a sample always has
sample index ``i`` (its seed is ``sampling.seed_for(i)``), so adaptive rollouts are a prefix of
the full-k ones and share their cache keys: turning ``adaptive`` off later only pays for the
rollouts never drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from dualcurate import ChatRequest, Engine, Filter, SamplingParams, StageConfig
from dualcurate.context import recipe_verifier
from dualcurate.errors import DualcurateError
from dualcurate.formats import load_template, template_problems
from dualcurate.recipe import EngineRef, VerifierRef
from dualcurate.sampling import SamplingOptions
from dualcurate_difficulty.columns import COLUMN_TYPES
from dualcurate_difficulty.expr import KeepExpressionError, parse_keep
from dualcurate_difficulty.rollouts import (
    DEFAULT_TEMPLATE,
    CheckFn,
    RolloutVerifier,
    build_messages,
    make_verifier,
    rollout_trace,
    verifier_problems,
)
from dualcurate_difficulty.stopping import StopRule

if TYPE_CHECKING:
    from dualcurate import StageContext
    from dualcurate.plugins import PluginHost


#: the engine that runs the proxy model when the recipe names none
DEFAULT_ENGINE = "hf"


class DifficultyConfig(StageConfig, SamplingOptions):
    """Options of the ``difficulty`` filter (see docs/difficulty.md).

    ``engine``: the engine that runs the proxy model, with its options (``model`` at least):
    ``engine = { use = "hf", model = "..." }``. ``verifier_stage``: verifiers run on what
    the recipe's verifier leaves undecided, each a name or ``{ use = "...", ...options }``.
    ``curate validate`` resolves both and validates their options before anything runs.
    ``samples_per_question`` (k): rollouts per sample at most. ``template``: the prompt, a
    Jinja file or text with the teacher's variables (:mod:`dualcurate.formats`; default: the
    question and the trace format's instruction). ``seed`` (None: the run's seed, as the
    teacher's)."""

    engine: EngineRef = Field(default_factory=lambda: EngineRef(use=DEFAULT_ENGINE))
    samples_per_question: int = Field(4, ge=1, le=1024)
    keep: str = "pass_rate == 0"
    band: tuple[float, float] | None = None
    adaptive: bool = True
    round_size: int = Field(1, ge=1)
    stop_rule: Literal["exact", "predictive"] = "exact"
    stop_risk: float = Field(0.02, gt=0.0, lt=0.5)
    seed: int | None = None
    system_prompt: str = ""
    template: str | None = None
    include_caption: bool = False
    include_images: bool = True
    use_check: bool = True
    verifier_stage: list[VerifierRef] = Field(default_factory=list)
    on_error: Literal["fail", "incorrect"] = "fail"
    report: bool = True

    runtime_fields = frozenset({"report"})

    @field_validator("keep")
    @classmethod
    def _keep_parses(cls, value: str) -> str:
        if value.strip() != "band":
            parse_keep(value)  # KeepExpressionError is a ValueError: pydantic reports it
        return value

    @field_validator("template")
    @classmethod
    def _template_ok(cls, value: str | None) -> str | None:
        problems = template_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _band_and_verifiers(self) -> DifficultyConfig:
        if self.keep.strip() == "band":
            if self.band is None:
                raise ValueError("keep = 'band' needs band = [lo, hi] (pass rates in [0, 1])")
            lo, hi = self.band
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"band = [{lo}, {hi}]: need 0 <= lo <= hi <= 1")
        elif self.band is not None:
            raise ValueError(f"band is set but keep = {self.keep!r}; set keep = 'band' to use "
                             f"it, or drop band")
        if not self.use_check and not self.verifier_stage:
            raise ValueError("use_check = false needs at least one verifier in verifier_stage, "
                             "otherwise nothing verifies the rollouts")
        return self

    def keep_expression(self) -> str:
        """The keep rule as an expression (``band`` spelt out)."""
        if self.keep.strip() == "band":
            assert self.band is not None
            return f"{self.band[0]!r} <= pass_rate <= {self.band[1]!r}"
        return self.keep

    def sampling(self, run_seed: int) -> SamplingParams:
        """The rollouts' sampling; ``seed`` None: the run's seed (as the teacher's)."""
        return self.sampling_params(self.seed if self.seed is not None else run_seed)


class DifficultyFilter(Filter):
    """Keeps samples by the pass rate of a proxy model (MMFineReason's difficulty filter).

    Adds ``pass_correct`` and ``pass_drawn`` (rollouts verified correct, rollouts drawn:
    what was observed), ``pass_rate`` (correct / k, only when all ``k`` rollouts were drawn;
    None for a sample adaptive sampling settled earlier, whose decision is exact all the
    same), ``rollouts`` (Trace dicts with verdicts) and
    ``keep``.
    """

    name = "difficulty"
    Config = DifficultyConfig
    requires = ("id", "question", "answer")
    provides = ("pass_rate", "pass_correct", "pass_drawn", "rollouts", "keep")
    column_types = COLUMN_TYPES
    generates = True  # shards stream: process() keeps its state in locals
    version = "1"

    #: None (the default): rollouts are verified by the recipe's verifier stage, by name
    #: (``rule-verify`` when the recipe has none; answer rules only). Tests and library users
    #: may set their own callable ``check(gold, response, question=None)`` instead.
    check_fn: CheckFn | None = None

    def __init__(self, config: Any = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        cfg: DifficultyConfig = self.config  # type: ignore[assignment]
        self.rule = StopRule(keep=parse_keep(cfg.keep_expression()), k=cfg.samples_per_question,
                             mode=cfg.stop_rule, risk=cfg.stop_risk)
        self._template = load_template(cfg.template, DEFAULT_TEMPLATE)
        self._ctx: StageContext | None = None
        self._engine: Engine | None = None
        self._verifier: RolloutVerifier | None = None
        self._summary: list[dict[str, Any]] = []

    # lifecycle --------------------------------------------------------------------------------
    def preflight(self, host: PluginHost) -> list[str]:
        # engine and verifier_stage are references: the pipeline resolves and validates them
        cfg: DifficultyConfig = self.config  # type: ignore[assignment]
        problems = []
        if cfg.use_check and self.check_fn is None:
            problems.extend(f"use_check: {p}" for p in verifier_problems(host))
        return problems

    def setup(self, ctx: StageContext) -> None:
        cfg: DifficultyConfig = self.config  # type: ignore[assignment]
        self._ctx = ctx
        self._summary = []
        self._engine = ctx.engine(cfg.engine.use, cfg.engine.options)
        check = self.check_fn if cfg.use_check else None
        stages = []
        if cfg.use_check and check is None:  # the recipe's verifier, through the registry
            name, options = recipe_verifier(ctx)
            ref = VerifierRef.model_validate({**options, "use": name})
            stages.append(make_verifier(ctx, ref, answer_only=True))
        stages.extend(make_verifier(ctx, ref) for ref in cfg.verifier_stage)
        self._verifier = RolloutVerifier(check, stages)

    def finish(self, ctx: StageContext) -> dict[str, Any]:
        """Write the pass-rate report (JSON, markdown, histogram PNG) over every committed
        shard and return its figures for the manifest."""
        cfg: DifficultyConfig = self.config  # type: ignore[assignment]
        self._ctx = ctx
        if not cfg.report or not (self._summary or self._has_shards()):
            return {}
        from dualcurate_difficulty.report import (
            build_report,
            summary_rows_from_store,
            write_report,
        )

        rows = list(summary_rows_from_store(ctx.store, ctx.stage_name) if self._has_shards()
                    else self._summary)
        if not rows:
            return {}
        paths = write_report(rows, ctx.workdir, k=cfg.samples_per_question)
        return {**build_report(rows, cfg.samples_per_question), "files": paths}

    def teardown(self) -> None:
        if self._verifier is not None:
            for stage in self._verifier.stages:
                stage.teardown()
        self._verifier = None
        self._engine = None

    def _has_shards(self) -> bool:
        ctx = self._ctx
        return bool(ctx is not None and ctx.store is not None
                    and ctx.store.finished_shards(ctx.stage_name))

    # work ---------------------------------------------------------------------------------------
    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> list[dict[str, Any]]:
        if self._engine is None or self._verifier is None:
            self.setup(ctx)
        assert self._engine is not None and self._verifier is not None
        cfg: DifficultyConfig = self.config  # type: ignore[assignment]
        engine, verifier, sampling = self._engine, self._verifier, cfg.sampling(ctx.seed)
        k = cfg.samples_per_question
        model = str(engine.identity().get("model", ""))
        messages = [build_messages(row, self._template, cfg.system_prompt,
                                   cfg.include_caption, cfg.include_images) for row in rows]
        rollouts: list[list[dict[str, Any]]] = [[] for _ in rows]
        correct = [0] * len(rows)
        decision: list[bool | None] = [None] * len(rows)
        step = cfg.round_size if cfg.adaptive else k
        drawn = 0
        pending = list(range(len(rows)))
        while pending:
            if cfg.adaptive or drawn >= k:
                for i in pending:
                    decision[i] = self._decide(rows[i], correct[i], drawn)
                pending = [i for i in pending if decision[i] is None]
                if not pending:
                    break
            upto = min(drawn + step, k)
            indices = list(range(drawn, upto))
            requests = [ChatRequest(messages=messages[i], n=len(indices), sample_indices=indices,
                                    request_id=str(rows[i].get("id", i))) for i in pending]
            results = ctx.generate(engine, requests, sampling)
            new = []
            for i, completions in zip(pending, results, strict=True):
                traces = [rollout_trace(c, idx, model, engine.name)
                          for c, idx in zip(completions, indices, strict=True)]
                new.append((rows[i], traces))
                rollouts[i].extend(traces)
            self._raise_on_errors(new)
            verifier.verify(new, ctx)
            for i, (_, traces) in zip(pending, new, strict=True):
                correct[i] += sum(1 for t in traces if t["verdict"] == "correct")
            drawn = upto
        out = []
        for i, row in enumerate(rows):
            used = len(rollouts[i])
            keep = bool(decision[i])
            # What was observed is stored as observed; a pass rate is only the k-rollout
            # figure (a sample stopped early after 1 of 1 correct is not "1.0").
            pass_rate = correct[i] / k if used == k else None
            out.append({**row, "pass_rate": pass_rate, "pass_correct": correct[i],
                        "pass_drawn": used, "rollouts": rollouts[i], "keep": keep})
            self._summary.append({"source": row.get("source", ""),
                                  "domain": row.get("domain", ""), "pass_rate": pass_rate,
                                  "pass_correct": correct[i], "pass_drawn": used,
                                  "keep": keep})
        return out

    def _decide(self, row: dict[str, Any], correct: int, drawn: int) -> bool | None:
        try:
            return self.rule.decide(row, correct, drawn)
        except KeepExpressionError as exc:
            raise DualcurateError(f"difficulty: sample {row.get('id', '?')}: {exc}") from None

    def _raise_on_errors(self, new: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
        cfg: DifficultyConfig = self.config  # type: ignore[assignment]
        failed = [(row, t) for row, traces in new for t in traces if t["error"] is not None]
        if failed and cfg.on_error == "fail":
            row, trace = failed[0]
            total = sum(len(traces) for _, traces in new)
            raise DualcurateError(
                f"difficulty: {len(failed)} of {total} rollouts failed (first: sample "
                f"{row.get('id', '?')} rollout {trace['sample_index']}: {trace['error']}). "
                f"Rollouts that succeeded are cached; fix the engine and rerun to retry, or set "
                f"on_error = \"incorrect\" to count failed rollouts as incorrect")
