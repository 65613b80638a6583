"""The ``dual-tuning`` efficacy judge: per task group, does reasoning (L) or direct (S) training
help this base model, and which data hurts either way?

1. hold out an eval split per group (``split == "eval"`` rows, else a seeded fraction);
2. evaluate the base model in both modes (B_S, B_L);
3. train ONE model on S ∪ L of the training rows through the trainer plugin;
4. evaluate it in both modes (DT_S, DT_L); gains, gaps and regions per group (``metrics``);
   with ``blind = true`` (the default), steps 2 and 4 also evaluate every group whose eval
   rows have images with each image blank (``blind``), in the same engine session;
5. curate: reasoning groups as L, direct groups as S, detrimental groups dropped.

Also: an inference-only estimate from step 2 alone, and (``validate = true``) retraining on
the curated mix, on everything and on the detrimental groups, each compared with the base.

Memory: one phase at a time holds the accelerator. Each evaluation builds the engine for its
model and closes it before anything else runs; a training run's trainer and model are released
(collected, and the GPU cache emptied) before the next engine is built. So the judge needs room
for the larger of one engine (its own setting: vLLM takes ``gpu_memory_utilization`` of the
device) and one training run, never both (docs/efficacy.md).
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, model_validator

from dualcurate.errors import DualcurateError
from dualcurate.formats import render_answer
from dualcurate.recipe import EngineRef
from dualcurate.stages import EfficacyJudge, StageConfig, StageResult
from dualcurate_dualtuning.blind import BLANK_DESCRIPTION
from dualcurate_dualtuning.data import (
    LONG,
    SHORT,
    GroupSplit,
    Mode,
    ModePrompts,
    split_groups,
    training_examples,
    verified_traces,
)
from dualcurate_dualtuning.evaluate import ModelScores, evaluate_model, has_images
from dualcurate_dualtuning.metrics import (
    DETRIMENTAL,
    DIRECT,
    REASONING,
    GroupMetrics,
    estimate_region,
    group_metrics,
)
from dualcurate_dualtuning.results import COLUMN_TYPES
from dualcurate_dualtuning.training import BaseModelTrainerRef, train_model

if TYPE_CHECKING:
    import datasets

    from dualcurate.context import StageContext
    from dualcurate.plugins import PluginHost

REGION_MODE: dict[str, Mode] = {REASONING: LONG, DIRECT: SHORT}
#: the engine and trainer the judge runs when the recipe names none
DEFAULT_ENGINE = "hf"
DEFAULT_TRAINER = "sft"


class DualTuningConfig(StageConfig):
    """Options of the ``dual-tuning`` judge (``[judge.plugins.dual-tuning]`` or ``[judge]``).

    ``engine`` and ``trainer`` are references, ``engine = { use = "vllm", ...options }``,
    resolved and validated by ``curate validate`` before anything runs. The judge owns the model both start from: ``base_model`` is the
    engine's ``model`` (each trained model replaces it in turn) and the trainer's
    ``model_field`` option (see :class:`BaseModelTrainerRef`)."""

    base_model: str = Field(description="Model to judge for: a local dir or a hub id.")
    engine: EngineRef = Field(default_factory=lambda: EngineRef(use=DEFAULT_ENGINE))
    trainer: BaseModelTrainerRef = Field(
        default_factory=lambda: BaseModelTrainerRef(use=DEFAULT_TRAINER))
    group_by: str = "domain"
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    eval_min: int = Field(1, ge=1)
    eval_max: int | None = Field(500, ge=1)
    system_prompt_short: str = ""
    system_prompt_long: str = ""
    user_prefix_short: str = "Answer directly."
    user_prefix_long: str = "Think step by step."
    show_choices: bool = True
    max_tokens_short: int | None = Field(None, ge=1, description="None: long enough for the "
                                         "longest gold answer in <answer> tags.")
    max_tokens_long: int = Field(1024, ge=1)
    max_traces_per_sample: int = Field(1, ge=1)
    include_eval_rows: bool = False
    estimate_saturation: float = Field(0.95, gt=0, le=1)
    estimate_margin: float = Field(0.0, ge=0)
    validate_: bool = Field(False, alias="validate")
    validate_everything_mode: Literal["long", "short", "dual"] = "long"
    blind: bool = Field(True, description="Also evaluate the base and the dual model with "
                        "every image blank (same size, mid-grey), per group whose eval rows "
                        "have images: the accuracy the images add. Doubles those groups' "
                        "evaluations; false turns it off.")
    seed: int | None = None

    model_config = {**StageConfig.model_config, "populate_by_name": True}

    @model_validator(mode="before")
    @classmethod
    def _base_model_into_refs(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        base = data.get("base_model")
        if not isinstance(base, str):
            return data  # pydantic says base_model is missing
        refs = {}
        for option, default in (("engine", DEFAULT_ENGINE), ("trainer", DEFAULT_TRAINER)):
            ref = data.get(option, default)
            ref = ref.model_dump() if isinstance(ref, BaseModel) else \
                {"use": ref} if isinstance(ref, str) else ref
            if not isinstance(ref, dict):
                return data  # pydantic says what is wrong with it
            if ref.get("model", base) != base:
                raise ValueError(f"{option}.model = {ref['model']!r}: the judge evaluates "
                                 f"base_model and trains from it; set base_model = "
                                 f"{ref['model']!r} instead, or leave {option}.model out")
            refs[option] = {k: v for k, v in ref.items() if k != "model"}
        # the engine loads the base model first (each trained model replaces it in turn); the
        # trainer gets it under its own model_field once resolved (BaseModelTrainerRef)
        return {**data, "engine": {**refs["engine"], "model": base}, "trainer": refs["trainer"]}

    @model_validator(mode="after")
    def _trainer_starts_from_the_base(self) -> DualTuningConfig:
        self.trainer.starts_from(self.base_model)
        return self

    @model_validator(mode="after")
    def _distinct_prompts(self) -> DualTuningConfig:
        if (self.system_prompt_short, self.user_prefix_short) == (
                self.system_prompt_long, self.user_prefix_long):
            raise ValueError("the short and long prompts are identical, so nothing selects "
                             "the mode; make user_prefix_short and user_prefix_long differ")
        return self

    def prompts(self) -> ModePrompts:
        return ModePrompts(self.system_prompt_short, self.system_prompt_long,
                           self.user_prefix_short, self.user_prefix_long, self.show_choices)


class DualTuningJudge(EfficacyJudge):
    """Dual Tuning: train one model on S ∪ L, compare its two modes with the base per group,
    and keep each group in the mode that helps (or drop it)."""

    name = "dual-tuning"
    Config = DualTuningConfig
    requires = ("id", "question", "answer")
    provides = ("mode", "efficacy_region")
    column_types = COLUMN_TYPES
    config: DualTuningConfig

    def preflight(self, host: PluginHost) -> list[str]:
        # engine and trainer are references: the pipeline resolves and validates them
        problems = []
        try:
            from dualcurate_verify import check  # noqa: F401
        except ImportError:
            problems.append("dual-tuning scores answers with dualcurate_verify.check; install "
                            "dualcurate-verify")
        return problems

    # the whole judge ---------------------------------------------------------------------------
    def run(self, dataset: datasets.Dataset, ctx: StageContext) -> StageResult:
        cfg = self.config
        seed = ctx.seed if cfg.seed is None else cfg.seed
        rows = dataset.to_list()
        if not rows:
            raise DualcurateError("dual-tuning: the dataset is empty; nothing to judge")
        for column in self.requires:
            if column not in rows[0]:
                raise DualcurateError(f"dual-tuning: the dataset has no {column!r} column; "
                                      f"it needs canonical rows (id, question, answer)")
        splits = split_groups(rows, cfg.group_by, cfg.eval_fraction, cfg.eval_min,
                              cfg.eval_max, seed)
        eval_rows = {s.group: s.eval for s in splits}
        max_tokens = {SHORT: self.short_budget(rows), LONG: cfg.max_tokens_long}
        prompts = cfg.prompts()
        ctx.workdir.mkdir(parents=True, exist_ok=True)

        def evaluate(model: str, blind: bool = False) -> ModelScores:
            try:  # the engine is closed when evaluate_model returns
                return evaluate_model(ctx, cfg.engine, model, eval_rows, prompts, max_tokens,
                                      seed, blind=blind)
            finally:
                release_memory()

        def train(tag: str, modes: dict[str, str]) -> Path:
            train_rows = [r for s in splits for r in s.train]
            examples = training_examples(train_rows, modes, cfg.group_by, prompts,
                                         cfg.max_traces_per_sample)
            try:
                return train_model(ctx, tag, cfg.trainer, examples, seed)
            finally:  # the trainer and its model, before the next evaluation engine loads
                release_memory()

        ctx.log.info("dual-tuning: evaluating the base model %s", cfg.base_model)
        base = evaluate(cfg.base_model, cfg.blind)
        dual_dir = train("dual", {s.group: "dual" for s in splits})
        ctx.log.info("dual-tuning: evaluating the dual model %s", dual_dir)
        dual = evaluate(str(dual_dir), cfg.blind)
        metrics = [group_metrics(s.group, base.get(s.group, SHORT), base.get(s.group, LONG),
                                 dual.get(s.group, SHORT), dual.get(s.group, LONG))
                   for s in splits]
        groups = [{**m.full_row(), "n_train": len(s.train), "n_eval": len(s.eval),
                   "blind": blind_scores(s.group, base, dual)}
                  for m, s in zip(metrics, splits, strict=True)]
        report: dict[str, Any] = {
            "groups": groups,
            "base_model": cfg.base_model,
            "dual_model": str(dual_dir),
            "group_by": cfg.group_by,
            "eval_split": {s.group: s.how for s in splits},
            "gain_basis": {m.group: m.gain_basis for m in metrics},
            "failed_requests": base.failed + dual.failed,
            "truncated": {"base": base.truncated, "dual": dual.truncated},
            "max_tokens": {"short": max_tokens[SHORT], "long": max_tokens[LONG]},
            "estimate": self.estimate(metrics),
            "blind_evaluation": blind_report(cfg.blind, splits, base, dual),
            "warnings": budget_warnings({"base": base, "dual": dual}, max_tokens),
        }
        if not any(verified_traces(r) for s in splits for r in s.train):
            report["warnings"].append(
                "no training row has a verified trace (verdict 'correct'), so the dual model "
                "saw no L examples and no group can be curated as L; run distill and verify "
                "stages before the judge")
        curated_table, curated_report = self.curate(dataset, rows, splits, metrics)
        report["curated"] = curated_report
        if cfg.validate_:
            from dualcurate_dualtuning.validation import validate

            report["validation"] = validate(splits, metrics, base, train, evaluate,
                                            cfg.validate_everything_mode)
        efficacy_path = ctx.workdir / "efficacy.json"
        efficacy_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        from dualcurate_dualtuning.plot import write_scatter

        plot_path = write_scatter(groups, ctx.workdir / "efficacy_scatter.svg",
                                  title=f"Dual Tuning: {Path(cfg.base_model).name}",
                                  absolute=any(m.gain_basis == "absolute" for m in metrics))
        import datasets as hf_datasets

        return StageResult(dataset=hf_datasets.Dataset(curated_table),
                           artifacts={"efficacy": str(efficacy_path),
                                      "scatter": str(plot_path), "model": str(dual_dir)},
                           report=report)

    # pieces ------------------------------------------------------------------------------------
    def short_budget(self, rows: list[dict[str, Any]]) -> int:
        """Direct-mode token budget: the configured one, else enough for the longest gold
        answer in ``<answer>`` tags (byte-level tokenizers never use more tokens than bytes)."""
        longest = max(len(render_answer(str(r["answer"])).encode()) for r in rows)
        if self.config.max_tokens_short is None:
            return max(32, longest + 16)
        return self.config.max_tokens_short

    def estimate(self, metrics: list[GroupMetrics]) -> dict[str, Any]:
        """The inference-only guess per group beside the trained region, and how often they
        agree."""
        cfg = self.config
        scale = 100.0
        out = []
        for m in metrics:
            guess = estimate_region(m.B_S, m.B_L, cfg.estimate_saturation, scale,
                                    cfg.estimate_margin)
            out.append({"group": m.group, "region_estimate": guess, "region": m.region,
                        "agrees": guess == m.region})
        agreement = sum(g["agrees"] for g in out) / len(out) if out else 0.0
        return {"method": "base model in both modes, no training: saturated base → "
                          "detrimental, else the mode the base is better at",
                "groups": out, "agreement": agreement}

    def curate(self, dataset: datasets.Dataset, rows: list[dict[str, Any]],
               splits: list[GroupSplit], metrics: list[GroupMetrics]) -> tuple[Any, dict]:
        """The curated rows as an Arrow table: the input's columns plus ``mode`` and
        ``efficacy_region``, in input order."""
        import pyarrow as pa

        region = {m.group: m.region for m in metrics}
        position = {id(r): i for i, r in enumerate(rows)}
        chosen: dict[int, tuple[str, str]] = {}
        no_trace = 0
        dropped = 0
        for split in splits:
            members = split.train + (split.eval if self.config.include_eval_rows else [])
            mode = REGION_MODE.get(region[split.group])
            for row in members:
                if mode is None:
                    dropped += 1
                elif mode == LONG and not verified_traces(row):
                    no_trace += 1
                else:
                    chosen[position[id(row)]] = (mode, region[split.group])
        indices = sorted(chosen)
        table = dataset.with_format("arrow")[0:len(dataset)]
        for name in ("mode", "efficacy_region"):
            if name in table.column_names:
                table = table.drop_columns([name])
        table = table.take(pa.array(indices, type=pa.int64()))
        table = table.append_column("mode", pa.array([chosen[i][0] for i in indices],
                                                     pa.string()))
        table = table.append_column("efficacy_region",
                                    pa.array([chosen[i][1] for i in indices], pa.string()))
        by_region = {name: sum(1 for i in indices if chosen[i][1] == name)
                     for name in (REASONING, DIRECT)}
        return table, {"rows": len(indices), "by_region": by_region,
                       "dropped_detrimental": dropped, "dropped_no_verified_trace": no_trace,
                       "eval_rows_included": self.config.include_eval_rows}


def release_memory() -> None:
    """Free what a finished phase (a training run, an evaluation engine) left behind: collect
    its objects (a trainer, its model and optimizer hold each other in cycles, so dropping the
    last reference is not enough) and hand the GPU blocks torch still caches back to the
    device, so the next phase's engine finds them free. torch is not imported for this."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def blind_scores(group: str, base: ModelScores, dual: ModelScores) -> dict[str, float] | None:
    """A group's blind accuracies (B_S, B_L, DT_S, DT_L in %, 4 decimals), None when it was
    not evaluated blind."""
    if group not in base.blind or group not in dual.blind:
        return None
    return {f"{prefix}_{key}": round(scores.blind[group][key], 4)
            for prefix, scores in (("B", base), ("DT", dual)) for key in ("S", "L")}


def blind_report(enabled: bool, splits: list[GroupSplit], base: ModelScores,
                 dual: ModelScores) -> dict[str, Any]:
    """efficacy.json's ``blind_evaluation``: on or off, the blank image, the groups evaluated
    blind, why each other group was not, and the blind requests that failed or were cut."""
    skipped = {s.group: ("blind = false" if not enabled else "no images in its eval rows")
               for s in splits if not (enabled and has_images(s.eval))}
    return {"enabled": enabled, "blank_image": BLANK_DESCRIPTION,
            "groups": [s.group for s in splits if s.group not in skipped],
            "skipped": skipped,
            "failed_requests": base.blind_failed + dual.blind_failed,
            "truncated": {"base": base.blind_truncated, "dual": dual.blind_truncated}}


def budget_warnings(models: dict[str, ModelScores], max_tokens: dict[Mode, int]) -> list[str]:
    """Sentences about responses cut at the token budget and requests that failed (blind
    ones apart)."""
    out = []
    for name, scores in models.items():
        for label, truncated, failed in ((f"{name} model", scores.truncated, scores.failed),
                                         (f"{name} model (blind)", scores.blind_truncated,
                                          scores.blind_failed)):
            for key, mode, option in (("S", SHORT, "max_tokens_short"),
                                      ("L", LONG, "max_tokens_long")):
                if truncated[key]:
                    out.append(f"{label}, {mode} mode: {truncated[key]} response(s) stopped at "
                               f"{option}={max_tokens[mode]} (scored as given); raise {option} "
                               f"if answers are cut off")
            if failed:
                out.append(f"{label}: {failed} request(s) failed and count as wrong; see the "
                           f"run's cache for the errors")
    return out


__all__ = ["DETRIMENTAL", "DualTuningConfig", "DualTuningJudge"]
