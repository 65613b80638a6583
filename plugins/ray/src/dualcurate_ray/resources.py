"""What each stage's actors ask Ray for: CPUs, GPUs, a placement group for tensor parallelism,
and how many actors the pool has. Pure functions of the job, the executor's options and the
cluster's resources (``ray.cluster_resources()``), so they are tested without Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from dualcurate.stages import MapJob

#: Engines that call a server over HTTP: their stages need no GPU where they run.
REMOTE_ENGINES = frozenset({"openai"})
#: Default CPUs per actor of a stage that does not generate: fractional, so a pool of one
#: actor per CPU never reserves every CPU of the cluster (what hangs a Ray Data actor pool
#: that does, ray issue 44687); each actor's process still uses a whole core.
DEFAULT_CPU_STAGE_CPUS = 0.5


class StageResources(BaseModel):
    """Per-stage resources (``[run.executor_options.stages.<stage>]``); unset fields are
    derived from the stage and the cluster."""

    model_config = ConfigDict(extra="forbid")

    num_workers: int | None = Field(None, ge=1, description="actors in the stage's pool")
    num_cpus: float | None = Field(None, ge=0, description="CPUs reserved per actor")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per actor (TP=1)")
    tensor_parallel_size: int | None = Field(None, ge=1, description="GPUs per engine; "
                                             "default: engine.tensor_parallel_size")
    placement_strategy: str = Field("STRICT_PACK", description="of the placement group when "
                                    "tensor_parallel_size > 1 (PACK lets one engine span nodes)")
    max_shards_in_flight: int | None = Field(None, ge=1, description="shards one actor of a "
                                             "generating stage works on at once")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray "
                                        "resources per actor (pin a stage to a node type)")

    runtime_fields: ClassVar[frozenset[str]] = frozenset()


@dataclass
class Plan:
    """The resolved resources of one stage's pool."""

    num_workers: int
    num_cpus: float
    num_gpus: float
    tensor_parallel_size: int
    placement_strategy: str
    max_shards_in_flight: int
    generates: bool
    resources: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def uses_placement_group(self) -> bool:
        return self.tensor_parallel_size > 1 and self.num_gpus > 0

    def bundles(self) -> list[dict[str, float]]:
        """One bundle per GPU of an engine (vLLM puts one worker in each), the CPU of the
        actor in the first."""
        return [{"GPU": 1.0, "CPU": 1.0} for _ in range(self.tensor_parallel_size)]

    def actor_options(self) -> dict[str, Any]:
        """``num_cpus``/``num_gpus`` of the actor itself (the placement group's scheduling
        strategy is added where the group exists)."""
        extra = {"resources": dict(self.resources)} if self.resources else {}
        if self.uses_placement_group:
            # the engine's GPUs are the group's bundles; the actor sits in bundle 0 and its
            # child workers (vLLM's, one per GPU) are captured by the group
            return {"num_cpus": 1.0, "num_gpus": 0, **extra}
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, **extra}


def stage_engine(job: MapJob) -> tuple[str, dict[str, Any]]:
    """The engine name and options of a stage's ``engine`` reference (``{use = "vllm",
    ...options}`` in the dumped config; ``("", {})`` for a stage without one)."""
    ref = job.stage_config.get("engine")
    if not isinstance(ref, dict):
        return "", {}
    return str(ref.get("use") or ""), {k: v for k, v in ref.items() if k != "use"}


def uses_local_model(job: MapJob) -> bool:
    """A generating stage whose engine runs the model in its own process (vLLM,
    transformers), as opposed to calling a server."""
    if not job.stage_cls.generates:
        return False
    name, options = stage_engine(job)
    return name not in REMOTE_ENGINES and not options.get("base_url")


def plan(job: MapJob, defaults: StageResources, override: StageResources | None,
         cluster: dict[str, float], max_shards_in_flight: int = 64) -> Plan:
    """Resources for ``job``'s pool: ``override`` (the stage's table) over ``defaults`` (the
    executor's top-level options) over what the stage and the cluster imply."""
    opts = {k: v for k, v in defaults.model_dump().items() if v is not None}
    if override is not None:
        opts.update({k: v for k, v in override.model_dump(exclude_unset=True).items()
                     if v is not None})
    generates = bool(job.stage_cls.generates)
    cpus = float(cluster.get("CPU", 1.0))
    gpus = float(cluster.get("GPU", 0.0))
    notes: list[str] = []
    _, engine = stage_engine(job)
    tp = int(opts.get("tensor_parallel_size") or engine.get("tensor_parallel_size") or 1)

    if "num_gpus" in opts:
        num_gpus = float(opts["num_gpus"])
    elif uses_local_model(job) and gpus > 0:
        num_gpus = float(tp)
    else:
        num_gpus = 0.0
    if num_gpus > 0 and tp > 1:
        num_gpus = float(tp)  # one engine spans its tensor-parallel GPUs
    if num_gpus > gpus:
        raise ValueError(
            f"stage {job.stage_name}: each actor needs {num_gpus:g} GPU(s) "
            f"(tensor_parallel_size={tp}) but the Ray cluster has {gpus:g}; add GPU nodes, or "
            f"set run.executor_options.stages.{job.stage_name}.num_gpus / "
            f"tensor_parallel_size")

    if "num_cpus" in opts:
        num_cpus = float(opts["num_cpus"])
    elif num_gpus > 0:
        num_cpus = 1.0
    else:
        num_cpus = DEFAULT_CPU_STAGE_CPUS

    if "num_workers" in opts:
        workers = int(opts["num_workers"])
    elif num_gpus > 0:
        workers = max(1, int(gpus // num_gpus))
    elif generates:
        # one client drives a server at the stage's max_concurrency; more actors multiply it
        workers = 1
        notes.append("one actor: an HTTP engine's max_concurrency is per actor")
    else:
        workers = max(1, math.floor(cpus))
    workers = max(1, min(workers, len(job.shards)))
    return Plan(num_workers=workers, num_cpus=num_cpus, num_gpus=num_gpus,
                tensor_parallel_size=tp if num_gpus > 0 else 1,
                placement_strategy=str(opts.get("placement_strategy", "STRICT_PACK")),
                max_shards_in_flight=int(opts.get("max_shards_in_flight")
                                         or max_shards_in_flight),
                generates=generates, resources=dict(opts.get("resources") or {}),
                notes=notes)
