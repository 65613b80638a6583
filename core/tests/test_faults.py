"""Fault injection on the core (run by `make test-faults`): torn writes, disk full."""

from __future__ import annotations

import copy
import errno
import os

import pytest

from dualcurate import Pipeline, RunStore, StoreError, load_recipe
from dualcurate.cache import RequestCache

from .conftest import RECIPE

pytestmark = pytest.mark.faults


def test_torn_shard_is_invisible_and_swept(core_host, tmp_path):
    store = Pipeline(load_recipe(copy.deepcopy(RECIPE)), host=core_host).run(tmp_path / "r")
    shard = store.shard_path("distill", 1)
    # a crash between write and rename leaves only a temp file
    os.replace(shard, shard.with_name(".tmp-crashed"))
    store.manifest["stages"][1]["status"] = "running"
    store.save_manifest()
    store = Pipeline(load_recipe(copy.deepcopy(RECIPE)), host=core_host).run(tmp_path / "r")
    assert store.finished_shards("distill") == [0, 1, 2]
    assert not (shard.parent / ".tmp-crashed").exists()
    ids = store.dataset("distill")["id"]
    assert len(ids) == 10 == len(set(ids))


def test_torn_cache_row_is_a_miss(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    cache.put("good", {"text": "x"})
    cache.put("torn", {"text": "y" * 100})
    blob = cache._db.execute("SELECT value FROM outputs WHERE key = 'torn'").fetchone()[0]
    cache._db.execute("UPDATE outputs SET value = ? WHERE key = 'torn'", (blob[:-3],))
    assert cache.get_many(["good", "torn"]) == {"good": {"text": "x"}}


def test_disk_full_mid_stage_is_clear_and_resumable(core_host, tmp_path, monkeypatch):
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src, dst):
        if str(dst).endswith("shard-00001.parquet") and "distill" in str(dst):
            calls["n"] += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(StoreError, match="No space left on device") as err:
        Pipeline(load_recipe(copy.deepcopy(RECIPE)), host=core_host).run(tmp_path / "r")
    assert "rerun the same command to resume" in str(err.value)
    store = RunStore(tmp_path / "r", create=False)
    assert store.finished_shards("distill") == [0]
    assert not [p for p in store.stage_dir("distill").iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.setattr(os, "replace", real_replace)
    store = Pipeline(load_recipe(copy.deepcopy(RECIPE)), host=core_host).run(tmp_path / "r")
    ids = store.dataset("distill")["id"]
    assert len(ids) == 10 == len(set(ids)) and store.manifest["status"] == "done"
