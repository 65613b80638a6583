"""Stage base classes. Plugins subclass one of these and register it through a hook.

Two shapes:

* :class:`MapStage` (distillers, verifiers, most filters): ``process(rows, ctx) -> rows``, one
  shard at a time, so an executor can run shards anywhere and a rerun skips finished ones.
* :class:`DatasetStage` (trainers, efficacy judges, whole-dataset filters):
  ``run(dataset, ctx) -> StageResult`` over the whole ``datasets.Dataset``.

Every stage declares a pydantic ``Config`` (validated before anything runs), ``requires`` (input
columns) and ``provides`` (columns it adds). ``setup(ctx)`` runs once per worker: load models
there, never per batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dualcurate.context import StageContext
from dualcurate.recipe import (
    StageConfig,
    code_versions,
    coerce_config,
    component_code_versions,
    component_refs,
    signature_inputs,
)
from dualcurate.schema import rows_to_table

if TYPE_CHECKING:
    import datasets

    from dualcurate.plugins import PluginHost

__all__ = ["StageConfig", "code_versions", "signature_inputs"]  # re-exported from config

Row = dict[str, Any]


class Stage:
    """Common base: a name, a kind, a validated config and a lifecycle."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    Config: ClassVar[type[StageConfig]] = StageConfig
    requires: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    #: Arrow types (``pyarrow.DataType``) of columns this stage adds, by name; the shards it
    #: writes hold them (a column all None in one shard keeps its type), others are inferred.
    column_types: ClassVar[dict[str, Any]] = {}
    version: ClassVar[str] = "1"
    #: Distributions (besides the one that ships the stage's class) whose code decides this
    #: stage's output, e.g. ``("dualcurate-verify",)`` for a stage that verifies answers:
    #: their versions enter the signature.
    code_dependencies: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: StageConfig | dict[str, Any] | None = None, **kwargs: Any):
        self.config = coerce_config(self.Config, config, kwargs)

    def preflight(self, host: PluginHost) -> list[str]:
        """Problems beyond the Config's own validation, found by ``curate validate`` before
        anything runs (an optional dependency not installed, a file the options name that
        is not there). Components the options name (``engine = { use = ... }``) are
        resolved and validated by the pipeline already. Each message names the option and
        the fix."""
        return []

    def check_upstream(self, upstream: list[Stage]) -> list[str]:
        """Problems only the stages before this one show (``upstream``, in run order), found
        by ``curate validate``: a trainer whose ``max_length`` would cut what the teacher may
        write, say. Each message names the option and the fix."""
        return []

    def setup(self, ctx: StageContext) -> None:
        """Called once per worker before the first shard: load models, open clients."""

    def teardown(self) -> None:
        """Called once per worker after the last shard."""

    def signature(self) -> str:
        """Hash of what determines this stage's output: class, version, config minus
        runtime-only fields, the versions of the code that computes it (the class's
        distribution and ``code_dependencies``, and those of every resolved component its
        options name: engines, trainers, verifiers; an editable install's with a hash of its
        source), and the contents of what the config names: files (``file_fields``,
        templates) and models (``weights_fields``). A rerun with the same signature reuses
        committed shards."""
        cfg = self.config.model_dump(mode="json", exclude=set(self.Config.runtime_fields))
        for path, ref in component_refs(self.config):
            # a component's runtime options never change outputs either
            view = json.loads(json.dumps(ref.signature_view(), default=str))
            name, _, index = path.partition("[")
            if path in cfg:
                cfg[path] = view
            elif index.endswith("]") and isinstance(cfg.get(name), list):  # verifiers = [...]
                cfg[name][int(index[:-1])] = view
        payload = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "version": self.version,
            "config": cfg,
            "code": {**code_versions(type(self)), **component_code_versions(self.config)},
            "inputs": signature_inputs(self.config),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Source(Stage):
    """Reads data and yields batches (lists) of canonical rows, in a deterministic order.

    A source that drops records itself (undecodable, duplicates) sets ``rows_read`` to the
    records it read, before any drop, by the end of ``read``: the manifest's and the report's
    "rows in" of the stage is that figure."""

    kind = "source"
    rows_read: int | None = None

    def read(self, ctx: StageContext) -> Iterable[list[Row]]:
        raise NotImplementedError


class MapStage(Stage):
    """A stage that maps one shard of rows to one shard of rows (same ids, added columns).

    ``generates = True`` says that ``process`` asks engines for model output (through
    ``ctx.generate``): the executor then streams, running several shards' ``process`` at once
    in threads so the engine never waits for one shard's slowest request, so ``process`` must
    be safe to call from several threads (keep per-shard state in locals). Stages that do
    not generate get one shard at a time."""

    generates: ClassVar[bool] = False

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        raise NotImplementedError

    def finish(self, ctx: StageContext) -> dict[str, Any]:
        """Called once after the last shard of a run (before ``teardown``); a JSON-able
        summary returned here is stored as the stage's ``report`` in the manifest. The
        committed shards are readable through ``ctx.store`` for whole-stage figures."""
        return {}

    def map_dataset(self, dataset: datasets.Dataset, ctx: StageContext | None = None,
                    batch_size: int = 256) -> datasets.Dataset:
        """Library use: run this stage over a ``datasets.Dataset`` without a run directory."""
        import datasets as hf_datasets

        ctx = ctx or StageContext.ephemeral(stage_name=self.name or type(self).__name__)
        self.setup(ctx)
        try:
            out: list[Row] = []
            for start in range(0, len(dataset), batch_size):
                end = min(start + batch_size, len(dataset))
                out.extend(self.process(dataset.select(range(start, end)).to_list(), ctx))
            self.finish(ctx)
        finally:
            self.teardown()
        return hf_datasets.Dataset(rows_to_table(out, type(self).column_types))


class Distiller(MapStage):
    kind = "distiller"


class Verifier(MapStage):
    kind = "verifier"


class Filter(MapStage):
    """Adds columns and a boolean ``keep``; rows with ``keep == False`` do not reach the next
    stage but stay in this stage's shards (reports and histograms read them)."""

    kind = "filter"


@dataclass
class StageResult:
    """What a whole-dataset stage returns.

    ``dataset``: rows for the next stage (None: pass the input through unchanged);
    ``artifacts``: name -> path of files it wrote (model dir, plots); ``report``: JSON-able
    figures merged into the manifest.
    """

    dataset: datasets.Dataset | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


class DatasetStage(Stage):
    """A stage that needs the whole dataset at once."""

    def run(self, dataset: datasets.Dataset, ctx: StageContext) -> StageResult:
        raise NotImplementedError


class DatasetFilter(DatasetStage):
    """A filter that needs the whole dataset (e.g. seeded subset carving)."""

    kind = "filter"


class Trainer(DatasetStage):
    """Trains a model on rows; returns the model directory (safetensors + tokenizer/processor).

    ``model_field`` names the option holding the model training starts from: a stage that
    runs a trainer on a model of its own choosing (dual-tuning's ``base_model``) sets that
    option, never guesses it."""

    kind = "trainer"
    model_field: ClassVar[str] = "model"

    def train(self, dataset: datasets.Dataset, ctx: StageContext) -> Path:
        raise NotImplementedError

    def run(self, dataset: datasets.Dataset, ctx: StageContext) -> StageResult:
        model_dir = self.train(dataset, ctx)
        return StageResult(dataset=None, artifacts={"model": str(model_dir)})


class EfficacyJudge(DatasetStage):
    """Decides per task group whether reasoning (L) or direct (S) training helps; returns a
    report and the curated dataset."""

    kind = "efficacy_judge"


@dataclass
class MapJob:
    """One map stage to run over shards: what an executor needs, and picklable (the stage's
    class and config, not a set-up instance), so an executor can build the stage again in
    another process or on another node.

    ``shards``: the upstream shard numbers still to do, in the order to commit them.
    ``run_dir``: the run store every worker reads and writes. ``cache``: the request cache
    file. ``seed``: the run seed."""

    stage_cls: type[MapStage]
    stage_config: dict[str, Any]
    stage_name: str
    upstream: str
    shards: list[int]
    run_dir: str
    cache: str | None = None
    seed: int = 0

    def make_stage(self) -> MapStage:
        return self.stage_cls(self.stage_cls.Config(**self.stage_config))


@dataclass
class ShardDone:
    """A shard an executor committed: its input and output row counts and how many of its
    model requests failed (the pipeline redoes such shards on the next run)."""

    index: int
    rows_in: int
    rows_out: int
    failed: int = 0


class Executor:
    """Runs a map stage over shards and commits them.

    ``run_map(job, stage, ctx)`` gets the job, the stage instance built in this process (an
    executor running shards here uses it; one running them elsewhere builds its own from the
    job) and the stage's context on the driver. It sets the stage up wherever shards run,
    writes every shard of ``job.shards`` to the run store (atomic rename, in ``job.shards``'
    order), yields a :class:`ShardDone` for each as it is committed, and tears the stage down.
    A kill at any point loses no committed shard; the pipeline reruns what is missing."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "executor"
    Config: ClassVar[type[StageConfig]] = StageConfig

    def __init__(self, config: StageConfig | dict[str, Any] | None = None):
        self.config = coerce_config(self.Config, config, {})

    def run_map(self, job: MapJob, stage: MapStage, ctx: StageContext) -> Iterator[ShardDone]:
        """Process and commit every shard in ``job.shards``; yield each once committed."""
        raise NotImplementedError

