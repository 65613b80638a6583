"""The ``synthetic`` source: procedurally rendered image puzzles, deterministic by seed.

Every row is a canonical sample (:class:`dualcurate.schema.Sample`) with its rendered PNG in the
run's image store, a dense caption (every shape and colour in the picture, as text), the
answer, and the family's step-by-step reference solution in ``meta["solution"]``. ``domain`` is
the task family; ``split`` is ``train`` or ``eval`` (eval labels are always correct).

The source only reads data. The demo's tiny base model is built by the ``synthetic-base`` model
builder, named in the recipe's ``[models]`` table (:mod:`dualcurate_synthetic.base_model`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dualcurate import Sample, Source, StageConfig, StageContext
from dualcurate_synthetic.families import (
    FAMILIES,
    FAMILY_ROLES,
    known_families,
    make_puzzles,
    student_question,
)
from dualcurate_synthetic.render import render_png


class SplitCounts(BaseModel):
    """Puzzles of one family per split."""

    model_config = ConfigDict(extra="forbid")

    train: int = Field(ge=0)
    eval: int = Field(ge=0)


#: options the source took before the base model moved to ``[models]``; the fix for each
MOVED_TO_MODELS = ("base_model_dir", "base_model")
MOVED_HINT = ("the base model is built by the recipe's [models] table now: [models.base] with "
              "path = \"runs/.cache/demo-base-seed0\" and build = { use = \"synthetic-base\", "
              "seed = 0, ... } (the settings [source.base_model] held go into build); stages "
              "name it \"@base\". See docs/demo.md")


class SyntheticConfig(StageConfig):
    families: list[str] = Field(default_factory=lambda: list(FAMILIES))
    train_per_family: int = Field(default=200, ge=0)
    eval_per_family: int = Field(default=100, ge=0)
    counts: dict[str, SplitCounts] = Field(default_factory=dict)
    seed: int = 0
    image_width: int = Field(default=64, ge=32)
    image_height: int = Field(default=64, ge=16)
    corrupt_train: bool = True
    caption_in_question: bool = False
    batch_size: int = 64

    runtime_fields = frozenset({"batch_size"})

    @model_validator(mode="before")
    @classmethod
    def _moved_to_models(cls, data: Any) -> Any:
        if isinstance(data, dict):
            moved = [key for key in MOVED_TO_MODELS if key in data]
            if moved:
                raise ValueError(f"{', '.join(moved)}: {MOVED_HINT}")
        return data

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: list[str]) -> list[str]:
        return known_families(value)


class SyntheticSource(Source):
    """Rendered puzzles in task families whose Dual Tuning region is known in advance:
    ``colour-ops`` (multi-step), ``nth-colour`` (perception), ``last-shape`` (labels
    corrupted in the train split). A student reads the picture; ``caption_in_question``
    puts the caption before the question instead, for a text-only student."""

    name = "synthetic"
    Config = SyntheticConfig
    provides = ("split",)
    version = "2"

    def counts_for(self, family: str) -> SplitCounts:
        return self.config.counts.get(family) or SplitCounts(
            train=self.config.train_per_family, eval=self.config.eval_per_family)

    def read(self, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        if ctx.images is None:
            raise ValueError("synthetic source: the stage context has no image store; run it "
                             "inside a pipeline or StageContext.ephemeral()")
        batch: list[dict[str, Any]] = []
        for family in self.config.families:
            counts = self.counts_for(family)
            for split, puzzle in make_puzzles(family, counts.train, counts.eval,
                                              self.config.seed, self.config.corrupt_train):
                png = render_png(puzzle.kind, puzzle.items, self.config.image_width,
                                 self.config.image_height)
                digest = ctx.images.put(png)
                question = puzzle.question
                if self.config.caption_in_question:
                    # A text-only student reads the picture through its caption.
                    question = student_question(puzzle)
                sample = Sample(
                    source="synthetic", domain=family, images=[digest],
                    question=question, answer=puzzle.answer,
                    answer_type=puzzle.answer_type, caption=puzzle.caption,
                    meta={"solution": puzzle.solution, "split": split,
                          "true_answer": puzzle.true_answer, "corrupted": puzzle.corrupted,
                          "family_role": FAMILY_ROLES[family], "seed": self.config.seed,
                          "choices": puzzle.choices, "bare_question": puzzle.question},
                    split=split)
                batch.append(sample.to_row())
                if len(batch) >= self.config.batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch
