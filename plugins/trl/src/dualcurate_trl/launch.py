"""Multi-process training: with ``accelerate_config`` set, a trainer stage prepares its examples
once (images resolved from the run's store), saves them next to the checkpoints and re-runs
itself under ``accelerate launch --config_file <accelerate_config>``; every process then loads
the prepared examples and trains (DDP, FSDP or DeepSpeed, as the YAML says).

The child entry point is ``python -m dualcurate_trl.launch SPEC.json``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualcurate_trl.errors import TrainerError
from dualcurate_trl.saving import SavedModel

if TYPE_CHECKING:
    import datasets

    from dualcurate_trl.base import TRLStage


def launch_command(accelerate_config: str, spec: Path) -> list[str]:
    """The command that runs the stage under accelerate (one process per device)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            accelerate_config, "-m", "dualcurate_trl.launch", str(spec)]


def launch(stage: TRLStage, train_dataset: datasets.Dataset, workdir: Path,
           vision: bool) -> SavedModel:
    """Save the prepared examples and a spec, run :func:`launch_command`, return the result."""
    data_dir = workdir / "prepared"
    train_dataset.save_to_disk(str(data_dir))
    cls = type(stage)
    config = stage.config.model_dump(mode="json")
    config["accelerate_config"] = None
    spec = workdir / "launch.json"
    spec.write_text(json.dumps({
        "stage": f"{cls.__module__}:{cls.__qualname__}", "config": config,
        "state": stage.launch_state(),
        "data": str(data_dir), "workdir": str(workdir), "vision": vision,
    }, indent=2), encoding="utf-8")
    cmd = launch_command(str(stage.config.accelerate_config), spec)
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise TrainerError(f"accelerate launch exited with {proc.returncode}: "
                           f"{' '.join(cmd)}; its output above says why (the checkpoints in "
                           f"{workdir / 'checkpoints'} let a rerun resume)")
    merged = workdir / "model-merged"
    return SavedModel(model=workdir / "model", merged=merged if merged.is_dir() else None)


def object_reference(obj: object, what: str) -> str:
    """``module:qualname`` of a module-level object that a launched process can import, or
    a TrainerError saying why ``obj`` cannot travel."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        raise TrainerError(
            f"{what} {obj!r} cannot travel to the processes accelerate_config launches: they "
            f"import it by name, so give a function defined at module level in an importable "
            f"module (not __main__, not a lambda or a nested function)")
    if resolve_reference(f"{module}:{qualname}") is not obj:
        raise TrainerError(f"{what} {obj!r}: importing {module}:{qualname} gives another "
                           f"object; give a module-level function")
    return f"{module}:{qualname}"


def resolve_reference(ref: str) -> object:
    """The object a ``module:qualname`` reference names."""
    module, _, qualname = ref.partition(":")
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv: list[str] | None = None) -> int:
    """Child process: load the spec and the prepared examples, train."""
    import datasets

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m dualcurate_trl.launch SPEC.json", file=sys.stderr)
        return 2
    spec: dict[str, Any] = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    cls = resolve_reference(spec["stage"])
    stage = cls(spec["config"])
    stage.restore_launch_state(spec.get("state") or {})
    train_dataset = datasets.load_from_disk(spec["data"])
    stage.fit(train_dataset, Path(spec["workdir"]), bool(spec["vision"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
