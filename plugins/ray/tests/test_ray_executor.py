"""The ray executor for real: a local Ray (2 CPUs, 2 logical GPUs) and a two-node
``ray.cluster_utils.Cluster`` on 127.0.0.1. Marked ``ray``: ``make test-ray``."""

from __future__ import annotations

import contextlib
import copy
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dualcurate import MapStage, Pipeline, PluginHost, RunStore, StageConfig, load_recipe
from dualcurate.errors import StageFailed
from dualcurate.recipe import DEFAULT_RECIPE
from dualcurate_openai.testing import Reply, ScriptedServer, chat_response

from .conftest import INIT

pytestmark = pytest.mark.ray

ITEMS = 96


def teacher(body: dict[str, Any], headers: dict[str, str], number: int) -> Reply:
    question = body["messages"][-1]["content"]
    text = question if isinstance(question, str) else question[-1]["text"]
    n = int(text.split("Item ", 1)[1].split(":", 1)[0])
    return Reply(body=chat_response(f"<think>{n} plus {n} is {2 * n}.</think>\n"
                                    f"<answer>{2 * n}</answer>"))


def slow_teacher(body: dict[str, Any], headers: dict[str, str], number: int) -> Reply:
    reply = teacher(body, headers, number)
    reply.delay = 0.15
    return reply


def write_items(path: Path, n: int = ITEMS) -> Path:
    import json

    path.write_text("".join(json.dumps({"question": f"Item {i}: what is {i} plus {i}?",
                                        "answer": str(2 * i)}) + "\n" for i in range(n)))
    return path


def distill_recipe(data: Path, base_url: str, samples: int = 2) -> dict[str, Any]:
    """hf-dataset -> openai-distill (loopback scripted server) -> rule-verify."""
    return {
        "run": {"shard_size": 8, "seed": 3},
        "source": {"use": "hf-dataset", "sources": [{"name": "items", "jsonl": str(data)}]},
        "distill": {"use": "openai-distill", "max_tokens": 64, "samples_per_question": samples,
                    "temperature": 1.0,
                    "engine": {"model": "teacher", "base_url": base_url, "max_retries": 0,
                               "max_concurrency": 8}},
        "verify": {"use": "rule-verify", "workers": 1},
    }


def on_ray(recipe: dict[str, Any], **options: Any) -> dict[str, Any]:
    recipe = copy.deepcopy(recipe)
    recipe["run"]["executor"] = "ray"
    recipe["run"]["executor_options"] = options
    return recipe


def run(recipe: dict[str, Any], out: Path, host: PluginHost | None = None) -> Any:
    if host is None:
        host = PluginHost(autoload=False)
        host.load("ray")
    return Pipeline(load_recipe(copy.deepcopy(recipe)), host=host).run(out)


def rows(out: Path, stage: str) -> list[dict[str, Any]]:
    return [r for t in RunStore(out, create=False).iter_tables(stage) for r in t.to_pylist()]


def shard_names(out: Path, stage: str) -> list[str]:
    return sorted(p.name for p in (out / stage).iterdir())


def cached(out: Path) -> int:
    db = sqlite3.connect(f"file:{out / 'cache.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------
def test_same_rows_as_local_and_the_cache_is_merged(tmp_path: Path, local_ray: Any) -> None:
    data = write_items(tmp_path / "items.jsonl")
    with ScriptedServer(teacher) as server:
        recipe = distill_recipe(data, server.base_url)
        run(recipe, tmp_path / "local")
        local_requests = server.samples
        server.reset()
        store = run(on_ray(recipe, num_workers=2, stages={"verify": {"num_workers": 2}}),
                    tmp_path / "ray")
        assert server.samples == local_requests == ITEMS * 2  # each sample asked once
        for stage in ("distill", "verify"):
            assert rows(tmp_path / "ray", stage) == rows(tmp_path / "local", stage)
            assert shard_names(tmp_path / "ray", stage) == shard_names(tmp_path / "local", stage)
        assert [s["status"] for s in store.manifest["stages"]] == ["done"] * 3
        # every actor's segment folded into the run's SQLite cache, none left behind
        assert cached(tmp_path / "ray") == ITEMS * 2
        assert list((tmp_path / "ray" / "cache.sqlite.d").glob("*.jsonl")) == []
        # the local executor resumes a run made on Ray (nothing to do) and reuses its cache
        server.reset()
        run(recipe, tmp_path / "ray")
        fresh = copy.deepcopy(recipe)
        fresh["run"]["cache"] = str(tmp_path / "ray" / "cache.sqlite")
        run(fresh, tmp_path / "local-from-ray-cache")
        assert server.samples == 0
        assert rows(tmp_path / "local-from-ray-cache", "verify") == rows(tmp_path / "local",
                                                                         "verify")


def test_default_recipe_same_rows_as_local(tmp_path: Path, local_ray: Any) -> None:
    import tomllib

    raw = tomllib.loads(DEFAULT_RECIPE.read_text())
    raw["run"].update(stages=["source", "distill", "verify"], shard_size=16, out=None)
    raw["models"]["base"].pop("build")  # no tiny model pre-training: map stages only
    raw["source"].update(train_per_family=20, eval_per_family=6)
    run(raw, tmp_path / "local", PluginHost())
    run(on_ray(raw, num_workers=2), tmp_path / "ray", PluginHost())
    assert len(rows(tmp_path / "local", "verify")) == 78
    for stage in ("source", "distill", "verify"):
        assert rows(tmp_path / "ray", stage) == rows(tmp_path / "local", stage)


def test_default_recipe_with_the_hf_proxy_same_rows_as_local(tmp_path: Path,
                                                               local_ray: Any) -> None:
    """The difficulty filter's hf proxy sampling at T = 1 in Ray actors (other processes,
    other torch thread counts, shards split between two actors, batches made of whatever
    each actor was sent) draws what the local executor draws, the pictures included (the
    default recipe's base, a tiny Idefics3, built barely trained)."""
    import tomllib

    raw = tomllib.loads(DEFAULT_RECIPE.read_text())
    raw["run"].update(stages=["source", "distill", "verify", "filter"], shard_size=16,
                      out=None)
    raw["models"]["base"]["path"] = str(tmp_path / "base")
    raw["models"]["base"]["build"].update(steps=2, examples_per_family=4, threads=1)
    raw["source"].update(train_per_family=20, eval_per_family=6)
    raw["filter"].update(samples_per_question=3, max_tokens=12, adaptive=False)
    run(raw, tmp_path / "local", PluginHost())
    run(on_ray(raw, num_workers=2), tmp_path / "ray", PluginHost())
    local = rows(tmp_path / "local", "filter")
    assert len(local) == 78
    assert len({r["pass_rate"] for r in local if r.get("pass_rate") is not None}) >= 1
    for stage in ("source", "distill", "verify", "filter"):
        assert rows(tmp_path / "ray", stage) == rows(tmp_path / "local", stage)


# ---------------------------------------------------------------------------------------------
class ProbeConfig(StageConfig):
    engine: dict[str, Any] = {"use": "fake-local"}  # a plain table: nothing to resolve
    fail: str = ""


class GPUProbe(MapStage):
    """Records where each shard ran: the actor's GPUs and placement group, and (TP > 1) the
    GPUs two child tasks get inside the group, as vLLM's workers would."""

    name = "gpu-probe"
    kind = "distiller"
    Config = ProbeConfig
    generates: ClassVar[bool] = True

    def setup(self, ctx: Any) -> None:
        import os

        import ray

        if self.config.fail == "setup":
            raise ValueError("cannot load the model")
        # every actor sets up once, whichever shards it gets: where its engine would load
        gpus = ",".join(str(g) for g in ray.get_gpu_ids())
        (ctx.workdir / f"setup-{os.getpid()}.txt").write_text(gpus)

    def process(self, rows: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
        import os

        import ray

        if self.config.fail == "process":
            raise KeyError("a bug in process")
        pg = ray.util.get_current_placement_group()
        children: list[str] = []
        tp = int(self.config.engine.get("tensor_parallel_size", 1))
        if tp > 1:
            child = ray.remote(num_gpus=1, num_cpus=0)(lambda: ray.get_gpu_ids()[0])
            children = sorted(str(g) for g in ray.get([child.remote() for _ in range(tp)]))
        info = {"gpus": [str(g) for g in ray.get_gpu_ids()], "pid": os.getpid(),
                "pg": pg.id.hex() if pg is not None else "",
                "bundles": len(pg.bundle_specs) if pg is not None else 0, "children": children}
        return [{**r, "where": info} for r in rows]


def probe_host() -> PluginHost:
    class Probe:
        from dualcurate import hookimpl

        @hookimpl
        def dualcurate_register_distillers(self, register: Any) -> None:
            register(GPUProbe)

    host = PluginHost(autoload=False, select=["hf-dataset", "ray"])
    host.register(Probe(), name="probe")
    return host


def probe_recipe(data: Path, **distill: Any) -> dict[str, Any]:
    return {"run": {"shard_size": 16},
            "source": {"use": "hf-dataset", "sources": [{"name": "items", "jsonl": str(data)}]},
            "distill": {"use": "gpu-probe", **distill}}


def test_one_gpu_per_actor(tmp_path: Path, local_ray: Any) -> None:
    data = write_items(tmp_path / "items.jsonl")
    run(on_ray(probe_recipe(data)), tmp_path / "out", probe_host())
    where = [r["where"] for r in rows(tmp_path / "out", "distill")]
    assert len(where) == ITEMS
    assert all(len(w["gpus"]) == 1 and w["pg"] == "" for w in where)
    # 2 logical GPUs: two actors, one engine each, on different GPUs
    setups = sorted((tmp_path / "out" / "distill" / "artifacts").glob("setup-*.txt"))
    assert sorted(p.read_text() for p in setups) == ["0", "1"]
    assert {w["pid"] for w in where} <= {int(p.stem.split("-")[1]) for p in setups}


def test_tensor_parallel_actor_gets_a_placement_group(tmp_path: Path, local_ray: Any) -> None:
    data = write_items(tmp_path / "items.jsonl")
    recipe = probe_recipe(data, engine={"use": "fake-local", "model": "m",
                                           "tensor_parallel_size": 2})
    run(on_ray(recipe), tmp_path / "out", probe_host())
    where = [r["where"] for r in rows(tmp_path / "out", "distill")]
    assert len({w["pid"] for w in where}) == 1  # 2 GPUs / TP 2: one engine
    for w in where:
        assert w["gpus"] == []  # the actor holds no GPU itself...
        assert w["bundles"] == 2 and w["pg"]  # ...its group holds one bundle per GPU
        assert w["children"] == ["0", "1"]  # and captures the engine's workers
    # TP larger than the cluster: refused before any actor starts, naming the option
    with pytest.raises(StageFailed, match="tensor_parallel_size"):
        run(on_ray(probe_recipe(data, engine={"use": "fake-local",
                                                         "tensor_parallel_size": 4})),
            tmp_path / "too-big", probe_host())


def test_stage_errors_stop_the_stage_with_the_cause(tmp_path: Path, local_ray: Any) -> None:
    data = write_items(tmp_path / "items.jsonl")
    with pytest.raises(StageFailed, match="a bug in process"):
        run(on_ray(probe_recipe(data, fail="process")), tmp_path / "a", probe_host())
    assert list((tmp_path / "a" / "distill").glob("shard-*")) == []
    with pytest.raises(StageFailed, match="cannot load the model"):
        run(on_ray(probe_recipe(data, fail="setup")), tmp_path / "b", probe_host())


# ---------------------------------------------------------------------------------------------
def test_node_removed_mid_stage_loses_nothing(tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"slot": 1}, "include_dashboard": False,
        "object_store_memory": INIT["object_store_memory"],
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                           "health_check_failure_threshold": 3}})
    worker_node = cluster.add_node(num_cpus=2, resources={"slot": 1},
                                   object_store_memory=INIT["object_store_memory"])
    data = write_items(tmp_path / "items.jsonl", 160)
    try:
        ray.init(address=cluster.address, logging_level="warning")
        cluster.wait_for_nodes()
        with ScriptedServer(slow_teacher) as server:
            recipe = distill_recipe(data, server.base_url, samples=1)
            recipe["distill"]["engine"]["max_concurrency"] = 4
            removed = threading.Event()

            def remove_when_busy() -> None:
                deadline = time.monotonic() + 120
                while server.samples < 60 and time.monotonic() < deadline:
                    time.sleep(0.02)
                cluster.remove_node(worker_node)  # its actor dies mid-shard
                removed.set()

            killer = threading.Thread(target=remove_when_busy, daemon=True)
            killer.start()
            opts = {"stages": {"distill": {"num_workers": 2, "resources": {"slot": 1}}}}
            run(on_ray(recipe, **opts), tmp_path / "ray")
            killer.join(5)
            assert removed.is_set()
            sent = server.samples
            resent = sent - 160
            server.reset()
            run(recipe, tmp_path / "local")
        got, want = rows(tmp_path / "ray", "distill"), rows(tmp_path / "local", "distill")
        assert [r["id"] for r in got] == [r["id"] for r in want]  # nothing lost or doubled
        assert got == want
        assert rows(tmp_path / "ray", "verify") == rows(tmp_path / "local", "verify")
        # only the dead actor's requests in flight were asked again (at most its concurrency)
        assert 0 <= resent <= 4
    finally:
        ray.shutdown()
        cluster.shutdown()


# ---------------------------------------------------------------------------------------------
def test_killed_driver_resumes_with_the_local_executor(tmp_path: Path) -> None:
    """`curate run --executor ray` SIGKILLed mid-distill, with the Ray it started; the same run
    resumed by the local executor: the rows of an uninterrupted run, and only the requests in
    flight at the kill asked again (the dead actors' cache segments are folded at start)."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    data = write_items(tmp_path / "items.jsonl", 200)
    with ScriptedServer(slow_teacher) as server:
        recipe = distill_recipe(data, server.base_url, samples=1)
        recipe["distill"]["engine"]["max_concurrency"] = 8
        toml = tmp_path / "recipe.toml"
        toml.write_text(f"""
[run]
shard_size = 8
seed = 3
[source]
use = "hf-dataset"
[[source.sources]]
name = "items"
jsonl = "{data}"
[distill]
use = "openai-distill"
max_tokens = 64
samples_per_question = 1
temperature = 1.0
[distill.engine]
model = "teacher"
base_url = "{server.base_url}"
max_retries = 0
max_concurrency = 8
[verify]
use = "rule-verify"
workers = 1
""")
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "NO_PROXY": "127.0.0.1"}
        out = tmp_path / "ray"
        init = "run.executor_options.init_options"
        proc = subprocess.Popen([str(Path(sys.executable).parent / "curate"), "run", str(toml),
                                 "--out", str(out), "--executor", "ray", "--no-report",
                                 "--set", f"{init}.num_cpus=2",
                                 "--set", f"{init}.include_dashboard=false",
                                 "--set", f"{init}.object_store_memory={INIT['object_store_memory']}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and proc.poll() is None and (
                    server.samples < 100 or not list((out / "distill").glob("shard-*"))):
                time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            family = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(True))]
        finally:
            for pid in family if "family" in locals() else [proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # a worker Ray started after the family was listed is in the session's group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            deadline = time.monotonic() + 30  # every process of the run is gone (its locks too)
            while time.monotonic() < deadline and any(
                    _pgid(p) == proc.pid for p in psutil.process_iter()):
                time.sleep(0.1)
        before = server.samples
        assert before < 200
        assert list((out / "cache.sqlite.d").glob("*.jsonl"))  # what the dead actor answered
        server.reset()
        host = PluginHost(autoload=False)
        Pipeline(load_recipe(str(toml)), host=host).run(out)  # local, the same run directory
        resent = before + server.samples - 200
        assert 0 <= resent <= 8  # at most what was in flight (max_concurrency)
        server.reset()
        run(recipe, tmp_path / "reference")
    for stage in ("distill", "verify"):
        assert rows(out, stage) == rows(tmp_path / "reference", stage)
    assert list((out / "cache.sqlite.d").glob("*.jsonl")) == []


def _pgid(process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None
