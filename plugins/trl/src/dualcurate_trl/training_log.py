"""The training log: every Trainer log record, with its step, as ``training_log.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def make_log_callback(path: Path) -> Any:
    """A TrainerCallback appending every log record (with its step) to ``path`` as JSONL."""
    from transformers import TrainerCallback

    class JsonlLogCallback(TrainerCallback):
        """Appends Trainer logs to training_log.jsonl (main process only)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                record = {"step": state.global_step, "epoch": state.epoch, **logs}
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record, default=float) + "\n")

    return JsonlLogCallback()


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a training_log.jsonl (missing file: none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
