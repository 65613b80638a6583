"""Plugin wiring: entry points register the stages; listing plugins imports no torch; the
accelerate passthrough runs the stage in a launched process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dualcurate import StageContext
from dualcurate_trl import plugin
from dualcurate_trl.grpo import GRPOStage, GSPOStage
from dualcurate_trl.sft import SFTStage
from dualcurate_trl.toy import arithmetic_rows, to_hf
from dualcurate_trl.training_log import read_log


def test_each_entry_point_registers_its_trainer(plugin_host, register_plugin) -> None:
    for obj, cls in ((plugin.sft, SFTStage), (plugin.grpo, GRPOStage),
                     (plugin.gspo, GSPOStage)):
        register_plugin(obj, name=f"test-{cls.name}")
        assert plugin_host.get("trainer", cls.name) is cls


def test_importing_the_plugin_imports_no_torch() -> None:
    code = ("import sys, dualcurate_trl.plugin, dualcurate_trl.data; "
            "print(sorted(m for m in ('torch', 'trl', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_missing_accelerate_config_is_reported(plugin_host) -> None:
    stage = SFTStage({"model": "m", "accelerate_config": "/nonexistent/accelerate.yaml"})
    problems = stage.preflight(plugin_host)
    assert any("accelerate_config /nonexistent/accelerate.yaml" in p for p in problems)


def test_signature_ignores_runtime_fields() -> None:
    a = SFTStage({"model": "m", "logging_steps": 1, "save_steps": 10})
    b = SFTStage({"model": "m", "logging_steps": 50, "save_steps": 999})
    c = SFTStage({"model": "m", "learning_rate": 1e-4})
    assert a.signature() == b.signature() != c.signature()


ACCELERATE_CPU = """\
compute_environment: LOCAL_MACHINE
distributed_type: 'NO'
num_machines: 1
num_processes: 1
machine_rank: 0
mixed_precision: 'no'
use_cpu: true
"""


@pytest.mark.slow
def test_accelerate_config_runs_the_stage_under_accelerate_launch(lm_dir: Path,
                                                                   tmp_path: Path) -> None:
    config = tmp_path / "accelerate.yaml"
    config.write_text(ACCELERATE_CPU)
    ctx = StageContext.ephemeral(stage_name="train", root=tmp_path / "run")
    stage = SFTStage({"model": str(lm_dir), "mode": "long", "max_steps": 2,
                      "accelerate_config": str(config),
                      "trl_args": {"gradient_checkpointing": False}})
    result = stage.run(to_hf(arithmetic_rows(4)), ctx)
    assert (Path(result.artifacts["model"]) / "model.safetensors").exists()
    assert (ctx.workdir / "launch.json").exists()
    assert [r["step"] for r in read_log(ctx.workdir / "training_log.jsonl")
            if "loss" in r] == [1, 2]
