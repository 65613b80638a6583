"""Shared helpers for core tests: small stages registered through a plugin object."""

from __future__ import annotations

import pytest

from dualcurate import (
    DatasetStage,
    Filter,
    MapStage,
    Register,
    Sample,
    Source,
    StageConfig,
    StageResult,
    hookimpl,
)


class CountConfig(StageConfig):
    n: int = 10
    domains: list[str] = ["math", "perception"]


class CountingSource(Source):
    """n rows "i + i", deterministic."""

    name = "counting"
    Config = CountConfig

    def read(self, ctx):
        rows = []
        for i in range(self.config.n):
            domain = self.config.domains[i % len(self.config.domains)]
            rows.append(Sample(source="counting", domain=domain, question=f"{i} + {i}?",
                               answer=str(2 * i), answer_type="number").to_row())
            if len(rows) == 3:
                yield rows
                rows = []
        if rows:
            yield rows


class DoubleConfig(StageConfig):
    factor: int = 2
    batch_size: int = 8
    runtime_fields = frozenset({"batch_size"})


class DoubleStage(MapStage):
    """Adds `doubled` = int(answer) * factor."""

    name = "double"
    kind = "distiller"
    Config = DoubleConfig
    provides = ("doubled",)

    def process(self, rows, ctx):
        return [{**r, "doubled": int(r["answer"]) * self.config.factor} for r in rows]


class EvenConfig(StageConfig):
    pass


class EvenFilter(Filter):
    name = "even"
    Config = EvenConfig

    def process(self, rows, ctx):
        return [{**r, "keep": int(r["answer"]) % 4 == 0} for r in rows]


class CountRowsJudge(DatasetStage):
    name = "count-judge"
    kind = "efficacy_judge"

    def run(self, dataset, ctx):
        groups = {}
        for d in dataset["domain"]:
            groups[d] = groups.get(d, 0) + 1
        return StageResult(dataset=dataset.select(range(min(2, len(dataset)))),
                           report={"groups": groups})


class CorePlugin:
    @hookimpl
    def dualcurate_register_sources(self, register: Register) -> None:
        register(CountingSource)

    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        register(DoubleStage)

    @hookimpl
    def dualcurate_register_filters(self, register: Register) -> None:
        register(EvenFilter)

    @hookimpl
    def dualcurate_register_efficacy_judges(self, register: Register) -> None:
        register(CountRowsJudge)


@pytest.fixture
def core_host(plugin_host, register_plugin):
    register_plugin(CorePlugin(), name="core-test")
    return plugin_host


RECIPE = {
    "run": {"shard_size": 4},
    "source": {"use": "counting", "n": 10},
    "distill": {"use": "double"},
    "filter": {"use": "even"},
    "judge": {"use": "count-judge"},
}
