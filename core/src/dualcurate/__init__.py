"""dualcurate: reasoning-efficacy-driven data curation for multimodal LLMs.

Library use::

    from dualcurate import load_recipe, Pipeline
    store = Pipeline(load_recipe("recipe.toml")).run("runs/x")
"""

from __future__ import annotations

from dualcurate.chat import ChatRequest, Completion
from dualcurate.context import StageContext
from dualcurate.engine import Engine, EngineConfig
from dualcurate.errors import DualcurateError, RecipeError, StoreError, UnknownComponentError
from dualcurate.hookspecs import Register, hookimpl, hookspec
from dualcurate.pipeline import Pipeline
from dualcurate.plugins import PluginHost, PluginInfo
from dualcurate.recipe import Recipe, load_recipe
from dualcurate.sampling import SamplingParams
from dualcurate.schema import CANONICAL_SCHEMA, Sample, Trace, rows_to_table, sample_id
from dualcurate.stages import (
    DatasetFilter,
    DatasetStage,
    Distiller,
    EfficacyJudge,
    Executor,
    Filter,
    MapStage,
    Source,
    Stage,
    StageConfig,
    StageResult,
    Trainer,
    Verifier,
)
from dualcurate.store import ImageStore, RunStore

__version__ = "0.1.0"

__all__ = [
    "CANONICAL_SCHEMA",
    "ChatRequest",
    "Completion",
    "DatasetFilter",
    "DatasetStage",
    "Distiller",
    "DualcurateError",
    "EfficacyJudge",
    "Engine",
    "EngineConfig",
    "Executor",
    "Filter",
    "ImageStore",
    "MapStage",
    "Pipeline",
    "PluginHost",
    "PluginInfo",
    "Recipe",
    "RecipeError",
    "Register",
    "RunStore",
    "Sample",
    "SamplingParams",
    "Source",
    "Stage",
    "StageConfig",
    "StageContext",
    "StageResult",
    "StoreError",
    "Trace",
    "Trainer",
    "UnknownComponentError",
    "Verifier",
    "hookimpl",
    "hookspec",
    "load_recipe",
    "rows_to_table",
    "sample_id",
]
