"""accelerate_config: the launched processes rebuild the stage from its options and from its
launch state, so GRPO/GSPO rewards score with the recipe's verifier there too."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from dualcurate import StageContext
from dualcurate_trl import launch
from dualcurate_trl.errors import TrainerError
from dualcurate_trl.grpo import GSPOStage
from dualcurate_trl.toy import arithmetic_rows, to_hf
from dualcurate_trl.training_log import read_log

SMALL = {"max_steps": 2, "num_generations": 2, "per_device_train_batch_size": 2,
         "max_completion_length": 4, "trl_args": {"gradient_checkpointing": False}}
VERIFIER_OPTIONS = {"symbolic_timeout": 2.5, "min_words": 7}


def recording_check(gold: str, response: str, question: str | None = None) -> SimpleNamespace:
    """Module level, so a launched process imports it by name: records the process that
    called it, and says correct for even-length responses."""
    marker = Path(os.environ["RECORDING_CHECK_DIR"]) / f"rank-{os.environ.get('RANK', '0')}"
    marker.write_text("called", encoding="utf-8")
    return SimpleNamespace(verdict="correct" if len(response) % 2 == 0 else "incorrect")


def _ctx_with_verifier(tmp_path: Path) -> StageContext:
    ctx = StageContext.ephemeral(stage_name="train", root=tmp_path / "run")
    ctx.store.manifest["recipe"] = {"run": {}, "verify": {"kind": "verifier",
                                                          "use": "rule-verify",
                                                          **VERIFIER_OPTIONS}}
    return ctx


def test_the_launched_stage_rewards_with_the_recipes_verifier(lm_dir: Path, tmp_path: Path,
                                                              monkeypatch) -> None:
    """The child (launch.main) gets the recipe's verifier, options included, and builds its
    accuracy reward on it (before: rule-verify with its defaults)."""
    ctx = _ctx_with_verifier(tmp_path)
    stage = GSPOStage({"model": str(lm_dir), **SMALL, "accelerate_config": "unused.yaml"})
    ds = stage.prepare(to_hf(arithmetic_rows(2)), ctx, vision=False)
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, check: SimpleNamespace(
        returncode=0))
    launch.launch(stage, ds, ctx.workdir, vision=False)
    spec = json.loads((ctx.workdir / "launch.json").read_text())

    built = []
    monkeypatch.setattr(GSPOStage, "fit", lambda self, data, workdir, vision: built.append(
        self.build_trainer(data, workdir, vision, [])[0]))
    assert launch.main([str(ctx.workdir / "launch.json")]) == 0
    accuracy = built[0].reward_funcs[0]
    assert accuracy.check.name == "rule-verify"
    assert accuracy.check.options == VERIFIER_OPTIONS
    assert spec["state"]["check"] is None


def test_a_check_that_cannot_be_imported_is_refused(lm_dir: Path, tmp_path: Path) -> None:
    ctx = StageContext.ephemeral(stage_name="train", root=tmp_path / "run")
    stage = GSPOStage({"model": str(lm_dir), **SMALL, "accelerate_config": "x.yaml"},
                      check=lambda gold, response, question=None: None)
    ds = stage.prepare(to_hf(arithmetic_rows(2)), ctx, vision=False)
    with pytest.raises(TrainerError, match="module level"):
        launch.launch(stage, ds, ctx.workdir, vision=False)


ACCELERATE_TWO_CPU = """\
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
use_cpu: false
gpu_ids: all
rdzv_backend: static
same_network: true
main_process_ip: 127.0.0.1
main_process_port: {port}
"""


#: torchrun-style launch of two processes; on a machine without GPUs accelerate (and the
#: stage's use_cpu) train them on CPU with gloo (MULTI_CPU would expect mpirun).
@pytest.mark.slow
def test_two_accelerate_processes_reward_with_the_stages_verifier(
        lm_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Two CPU processes under accelerate launch: each one's rewards come from the check the
    stage was given (imported by name there), with the recipe's verifier options carried."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "accelerate.yaml"
    config.write_text(ACCELERATE_TWO_CPU.format(port=port))
    calls = tmp_path / "calls"
    calls.mkdir()
    monkeypatch.setenv("RECORDING_CHECK_DIR", str(calls))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    ctx = _ctx_with_verifier(tmp_path)
    stage = GSPOStage({"model": str(lm_dir), **SMALL, "accelerate_config": str(config)},
                      check=recording_check)
    stage.train(to_hf(arithmetic_rows(4)), ctx)
    spec = json.loads((ctx.workdir / "launch.json").read_text())
    assert spec["state"] == {"verifier": ["rule-verify", VERIFIER_OPTIONS],
                             "check": f"{__name__}:recording_check"}
    assert sorted(p.name for p in calls.iterdir()) == ["rank-0", "rank-1"]
    records = [r for r in read_log(ctx.workdir / "training_log.jsonl") if "reward" in r]
    assert records and any(r["rewards/accuracy/mean"] > 0 for r in records), records
