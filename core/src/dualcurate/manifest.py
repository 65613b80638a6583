"""A run's resume bookkeeping: each stage's record in ``manifest.json`` and the rules that decide,
when a run starts or resumes, what a stage still has to do.

A stage's record (``{"name", "plugin", "kind", "signature", "status", "rows_in", "rows_out",
"seconds", ...}``) lives in the store's manifest, which is saved (atomically) at every change
that a kill must not lose. The rules:

* a changed signature (config, code, files read or upstream changed) clears the stage;
* shards with failed requests (``retry_shards``) and shards whose upstream shard was rewritten
  since they were computed (``stale_shards``, marked durably before the rewrite, and delta
  shards whose base is gone) are removed and redone; a whole-dataset stage that was done runs
  again;
* a stage another run computed (``shared_from``, ``curate sweep``) is recomputed here (its model
  calls come from the cache), never written into;
* a stage that is done is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dualcurate.errors import DualcurateError, StageFailed
from dualcurate.store import RunStore

#: what a stage computed, forgotten when it is recomputed from scratch
_COMPUTED = ("retry_shards", "stale_shards", "rows_stage", "report", "artifacts")


class StageRecord:
    """One stage's entry in the manifest (``data``, the dict the store saves)."""

    def __init__(self, store: RunStore, name: str):
        self.store, self.name = store, name
        self.data: dict[str, Any] = store.stage_record(name)

    def prepare(self, signature: str, plugin: str, kind: str, map_stage: bool,
                log: Callable[[str], None]) -> bool:
        """Apply the resume rules for this run; True when the stage has work to do (it is then
        marked running), False when it is done already."""
        rec = self.data
        if rec.get("signature") not in (None, signature):
            log(f"{self.name}: configuration, code, files it reads or upstream changed; "
                f"recomputing")
            self.store.clear_stage(self.name)
            rec.update(status="pending", rows_in=0, rows_out=0, seconds=0.0)
            rec.pop("stale_shards", None)
            rec.pop("retry_shards", None)
        rec.update(signature=signature, plugin=plugin, kind=kind)
        stale = set(rec.get("stale_shards", []))
        if map_stage:  # delta shards whose upstream shard is no longer their base
            stale |= set(self.store.stale_deltas(self.name))
        redo = set(rec.get("retry_shards", [])) | stale
        if redo and kind != "source":
            if map_stage:
                present = [i for i in sorted(redo) if self.store.shard_path(self.name, i).exists()]
                for i in present:
                    self.store.shard_path(self.name, i).unlink(missing_ok=True)
                if present:
                    log(f"{self.name}: redoing {len(present)} shard(s) with failed requests or "
                        f"rewritten upstream")
            elif rec["status"] == "done":
                log(f"{self.name}: upstream rows changed; running it again")
            if rec["status"] == "done":
                rec["status"] = "pending"
            rec.pop("stale_shards", None)
            self.store.save_manifest()
        if rec["status"] == "done":
            log(f"{self.name}: done already, skipped")
            return False
        if rec.pop("shared_from", None) is not None:
            # its folder holds hard links to another run's files, never to be written into
            self.store.clear_stage(self.name)
            for key in _COMPUTED:
                rec.pop(key, None)
        rec["status"] = "running"
        self.store.save_manifest()
        return True

    @property
    def rows_stage(self) -> str:
        """The stage whose shards hold this stage's rows (a whole-dataset stage that returns no
        dataset leaves its upstream's)."""
        return self.data.get("rows_stage", self.name)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Time the stage into ``seconds``; mark it failed if the body raises (an unexpected
        exception becomes :class:`StageFailed`, naming the stage and how to resume); the
        manifest is saved either way."""
        started = time.monotonic()
        try:
            yield
        except DualcurateError:
            self.data["status"] = "failed"
            raise
        except Exception as exc:
            self.data["status"] = "failed"
            self.data["error"] = f"{type(exc).__name__}: {exc}"
            raise StageFailed(f"stage {self.name} ({self.data.get('plugin')}) failed: "
                              f"{type(exc).__name__}: {exc}. Committed shards are kept; fix "
                              f"the cause and rerun the same command to resume.") from exc
        finally:
            self.data["seconds"] = round(self.data.get("seconds", 0.0)
                                         + time.monotonic() - started, 3)
            self.store.save_manifest()

    def done(self, rows_stage: str) -> None:
        self.data.update(status="done", rows_stage=rows_stage)
        self.data.pop("error", None)
        self.store.save_manifest()


def mark_downstream(store: RunStore, order: Sequence[str], name: str,
                    indices: Sequence[int]) -> None:
    """Before stage ``name`` (re)writes shards ``indices``, record them as stale in every later
    stage of ``order`` that has already computed something, and persist that, so a later stage
    redoes them even if this run is killed or fails before it gets there."""
    later = order[order.index(name) + 1:] if name in order else []
    changed = False
    for other in later:
        rec = next((r for r in store.manifest["stages"] if r["name"] == other), None)
        if rec is None:
            continue
        marks = set(indices)
        if marks - set(rec.get("stale_shards", [])):
            rec["stale_shards"] = sorted(set(rec.get("stale_shards", [])) | marks)
            changed = True
    if changed:
        store.save_manifest()
