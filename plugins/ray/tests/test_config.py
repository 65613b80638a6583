"""Quick checks in the default suite: registration, options, resource plans (no Ray)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from dualcurate import MapStage, PluginHost, StageConfig
from dualcurate.stages import MapJob
from dualcurate_ray.executor import RayExecutor, RayExecutorConfig
from dualcurate_ray.resources import StageResources, plan


class _Cfg(StageConfig):
    engine: dict[str, Any] = {"use": "vllm"}  # a reference, as the pipeline dumps it


class _Gen(MapStage):
    name = "gen"
    kind = "distiller"
    Config = _Cfg
    generates: ClassVar[bool] = True


class _Cpu(MapStage):
    name = "cpu"
    kind = "verifier"


def _job(cls: type[MapStage], shards: int = 100, **config: Any) -> MapJob:
    return MapJob(stage_cls=cls, stage_config=config, stage_name="distill", upstream="source",
                  shards=list(range(shards)), run_dir="/nonexistent")


def test_entry_point_registers_the_ray_executor_without_importing_ray() -> None:
    import subprocess
    import sys

    host = PluginHost(autoload=False, select=["ray"])
    assert host.get("executor", "ray") is RayExecutor
    assert host.owner("executor", "ray") == "ray"
    probe = ("import sys; from dualcurate import PluginHost; "
             "h = PluginHost(autoload=False, select=['ray']); h.names('executor'); "
             "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"  # `curate plugins` and validation stay fast


def test_options_are_strict_and_runtime_only() -> None:
    with pytest.raises(ValidationError):
        RayExecutorConfig(adress="auto")
    with pytest.raises(ValidationError):
        RayExecutorConfig(stages={"distill": {"num_gpu": 1}})
    cfg = RayExecutorConfig(address="auto", stages={"distill": {"tensor_parallel_size": 8}})
    assert set(cfg.model_dump()) <= cfg.runtime_fields


def test_cpu_stage_takes_fractional_cpus_never_every_cpu() -> None:
    p = plan(_job(_Cpu), StageResources(), None, {"CPU": 16.0, "GPU": 8.0})
    assert p.num_workers == 16 and p.num_cpus == 0.5 and p.num_gpus == 0
    assert p.num_workers * p.num_cpus < 16
    assert p.actor_options() == {"num_cpus": 0.5, "num_gpus": 0.0}


def test_gpu_stage_one_engine_per_gpu_and_tensor_parallel_groups() -> None:
    one = plan(_job(_Gen), StageResources(), None, {"CPU": 32.0, "GPU": 16.0})
    assert (one.num_workers, one.num_gpus, one.uses_placement_group) == (16, 1.0, False)
    tp = plan(_job(_Gen, engine={"use": "vllm", "model": "m", "tensor_parallel_size": 8}),
              StageResources(), None, {"CPU": 32.0, "GPU": 16.0})
    assert (tp.num_workers, tp.num_gpus, tp.tensor_parallel_size) == (2, 8.0, 8)
    assert tp.uses_placement_group and tp.bundles() == [{"GPU": 1.0, "CPU": 1.0}] * 8
    assert tp.actor_options() == {"num_cpus": 1.0, "num_gpus": 0}
    # the stage's table wins over the executor's defaults and the engine options
    over = plan(_job(_Gen, engine={"use": "vllm", "tensor_parallel_size": 8}),
                StageResources(num_workers=1), StageResources(tensor_parallel_size=4),
                {"GPU": 16.0})
    assert (over.num_workers, over.tensor_parallel_size) == (1, 4)


def test_the_teachers_engine_reference_decides_placement() -> None:
    """The teacher distiller as the pipeline hands it over: ``engine`` is a reference."""
    from dualcurate.distill import TeacherDistiller

    def job(**engine: Any) -> MapJob:
        config = TeacherDistiller({"engine": engine}).config.model_dump(mode="python")
        return MapJob(stage_cls=TeacherDistiller, stage_config=config, stage_name="distill",
                      upstream="source", shards=list(range(100)), run_dir="/nonexistent")

    tp = plan(job(use="vllm", model="m", tensor_parallel_size=4), StageResources(), None,
              {"CPU": 32.0, "GPU": 8.0})
    assert (tp.num_workers, tp.tensor_parallel_size, tp.num_gpus) == (2, 4, 4.0)
    remote = plan(job(use="openai", model="m", base_url="http://x"), StageResources(), None,
                  {"CPU": 8.0, "GPU": 8.0})
    assert remote.num_gpus == 0


def test_http_engines_and_cpu_clusters_take_no_gpu() -> None:
    remote = plan(_job(_Gen, engine={"use": "openai", "base_url": "http://x"}),
                  StageResources(), None, {"CPU": 8.0, "GPU": 8.0})
    assert remote.num_gpus == 0 and remote.num_workers == 1
    cpu_only = plan(_job(_Gen), StageResources(), None, {"CPU": 8.0})
    assert cpu_only.num_gpus == 0


def test_more_gpus_than_the_cluster_has_is_an_error_naming_the_option() -> None:
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        plan(_job(_Gen, engine={"use": "vllm", "tensor_parallel_size": 8}), StageResources(), None,
             {"CPU": 8.0, "GPU": 4.0})


def test_pool_never_larger_than_the_shards() -> None:
    assert plan(_job(_Cpu, shards=3), StageResources(), None, {"CPU": 64.0}).num_workers == 3


def test_cli_executor_flag_reaches_the_recipe(tmp_path) -> None:
    from click.testing import CliRunner

    from dualcurate.cli import cli

    recipe = tmp_path / "r.toml"
    recipe.write_text('[source]\nuse = "synthetic"\n')
    result = CliRunner().invoke(cli, ["run", str(recipe), "--out", str(tmp_path / "o"),
                                      "--executor", "no-such-executor"])
    assert result.exit_code != 0
    assert "executor 'no-such-executor': nothing registered under that name" in \
        f"{result.output}{result.exception}"
