"""Models a recipe names once, in its ``[models]`` table, and the builders that make them.

```toml
[models]
teacher = "Qwen/Qwen3-VL-235B-A22B-Thinking"      # a hub id or a local folder

[models.base]                                      # a model a builder makes when missing
path = "runs/.cache/demo-base-seed0"
build = { use = "synthetic-base", seed = 0, steps = 300 }
```

Stage options refer to them as ``"@teacher"``, ``"@base"`` (see :mod:`dualcurate.recipe`).
Before the stages run, the pipeline makes sure every model with ``build`` exists:
:func:`ensure_model` builds it into a temporary sibling folder and renames it into place, with
a marker recording the builder and its signature, so a rerun reuses it, a change of the
builder's options rebuilds it, and a kill mid-build leaves nothing half-built behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from dualcurate.errors import DualcurateError
from dualcurate.stages import Stage

if TYPE_CHECKING:
    from dualcurate.context import StageContext

#: written into a built model's folder: which builder made it, with which signature
MARKER = "dualcurate-model.json"


class ModelBuilder(Stage):
    """Builds a model folder loadable with ``from_pretrained`` (weights, config, tokenizer or
    processor). Registered through ``dualcurate_register_model_builders``; named in a recipe's
    ``[models.NAME] build = { use = "...", ... }``. The options are the builder's ``Config``;
    its :meth:`signature` decides when an existing folder must be rebuilt."""

    kind: ClassVar[str] = "model_builder"

    def build(self, out: Path, ctx: StageContext) -> None:
        """Write the model into the empty folder ``out``."""
        raise NotImplementedError


@contextlib.contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """One builder per folder at a time (several runs may share a model cache)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.with_name(out.name + ".lock")
    with open(lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built_by(out: Path) -> dict | None:
    """The marker of a built model folder (None: not built by a builder, or incomplete)."""
    try:
        return json.loads((out / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _someone_elses(out: Path, builder: ModelBuilder) -> bool:
    """Whether ``out`` (holding no marker) is a file or a folder with files that no builder
    made: never deleted to build there."""
    if not out.exists():
        return False
    if not out.is_dir():
        return True
    return any(out.iterdir())


def ensure_model(name: str, out: str | Path, builder: ModelBuilder, ctx: StageContext,
                 log: Callable[[str], None] = lambda m: None) -> bool:
    """Build model ``name`` into ``out`` unless it is there, built by the same builder with the
    same signature. Returns whether it was built now."""
    out = Path(out)
    signature = builder.signature()
    with _build_lock(out):
        marker = built_by(out)
        if marker is not None and marker.get("signature") == signature:
            return False
        if marker is None and _someone_elses(out, builder):
            raise DualcurateError(
                f"model {name}: {out} holds files but no {MARKER}, so no model builder made "
                f"it; it is not replaced. Drop build from [models.{name}] to use that folder "
                f"as it is, point [models.{name}] path at another folder, or delete it to "
                f"have {builder.name} build the model there")
        if out.exists():
            reason = ("built with other options" if marker is not None else
                      "built by an earlier version of the builder")
            log(f"model {name}: {out} {reason}; building it again with {builder.name}")
        else:
            log(f"model {name}: building {out} with {builder.name}")
        started = time.monotonic()
        tmp = out.with_name(out.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)  # what a killed build left
        tmp.mkdir(parents=True)
        try:
            builder.setup(ctx)
            try:
                builder.build(tmp, ctx)
            finally:
                builder.teardown()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = round(time.monotonic() - started, 1)
        (tmp / MARKER).write_text(json.dumps(
            {"model": name, "builder": builder.name, "signature": signature,
             "options": builder.config.model_dump(mode="json"), "seconds": seconds}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        log(f"model {name}: built {out} in {seconds} s")
        return True
