"""The `curate` CLI, run in-process through the testing kit and as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

HELLO = Path(__file__).parents[2] / "examples" / "dualcurate-hello" / "recipe.toml"
CURATE = Path(sys.executable).parent / "curate"


def test_plugins_json(run_cli):
    result = run_cli("plugins", "--json")
    assert result.exit_code == 0, result.stderr
    infos = {p["name"]: p for p in json.loads(result.stdout)}
    for info in infos.values():
        assert set(info) == {"name", "distribution", "version", "hooks", "registers", "error",
                             "problems", "warnings"}
        assert info["problems"] == [] and info["warnings"] == []
    assert infos["builtins"]["registers"] == {"executor": ["local"], "distiller": ["teacher"]}
    assert infos["hello"]["registers"] == {"source": ["hello"], "filter": ["hello-length"],
                                           "engine": ["hello-sum"]}
    assert infos["hello"]["distribution"] == "dualcurate-hello"


def test_plugins_table(run_cli):
    result = run_cli("plugins")
    assert result.exit_code == 0
    assert "hello-length" in result.stdout and "builtins" in result.stdout


def test_unknown_plugin_is_a_usage_error(run_cli):
    result = run_cli("--plugin", "no-such", "plugins")
    assert result.exit_code == 2
    assert "no-such" in result.stderr and "hello" in result.stderr
    assert "Traceback" not in result.stderr


def test_env_selects_plugins(run_cli):
    result = run_cli("plugins", env={"DUALCURATE_PLUGINS": "no-such"})
    assert result.exit_code == 2 and "no-such" in result.stderr


def test_validate(run_cli):
    assert run_cli("validate", str(HELLO)).exit_code == 0
    bad = run_cli("validate", str(HELLO), "--set", "source.n=x", "--set", "filter.oops=1")
    assert bad.exit_code == 2
    assert "[source] n:" in bad.stderr and "[filter] oops:" in bad.stderr


def test_run_inspect_export(run_cli):
    result = run_cli("run", str(HELLO), "--out", "out", "--set", "source.n=9")
    assert result.exit_code == 0, result.stderr
    run_dir = result.cwd / "out"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["plugins"]["hello"] == "0.1.0"
    html = (run_dir / "report.html").read_text()
    assert "hello-length" in html and "report.html" in result.stderr
    (run_dir / "report.md").unlink()
    again = run_cli("report", "out")
    assert again.exit_code == 0 and (run_dir / "report.md").exists()
    assert run_cli("report", "not-a-run").exit_code == 2

    shown = run_cli("inspect", "out", "--stage", "source", "--limit", "2")
    assert shown.exit_code == 0 and "What is" in shown.stdout

    for fmt in ("parquet", "jsonl", "hf"):
        exp = run_cli("export", "out", "--stage", "filter", "--to", f"x-{fmt}", "--format", fmt)
        assert exp.exit_code == 0, exp.stderr
    lines = (result.cwd / "x-jsonl" / "filter.jsonl").read_text().splitlines()
    assert len(lines) == 9 and all(json.loads(line)["keep"] for line in lines)
    import datasets

    assert len(datasets.load_from_disk(str(result.cwd / "x-hf"))) == 9
    bad = run_cli("export", "out", "--stage", "nope", "--to", "y")
    assert bad.exit_code == 2 and "stages: source, filter" in bad.stderr


def test_unwritable_out_dir(run_cli):
    (Path.cwd()).mkdir(exist_ok=True)
    result = run_cli("run", str(HELLO), "--out", "/proc/no-such-dir/run")
    assert result.exit_code == 2
    assert "cannot write there" in result.stderr and "Traceback" not in result.stderr


def test_incompatible_run_dir(run_cli):
    run_cli("run", str(HELLO), "--out", "old")
    manifest_path = Path.cwd() / "old" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["store_format"] = 0
    manifest_path.write_text(json.dumps(manifest))
    result = run_cli("run", str(HELLO), "--out", "old")
    assert result.exit_code == 2 and "store format 0" in result.stderr


def test_debug_shows_traceback(run_cli):
    result = run_cli("--debug", "validate", "missing.toml")
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_real_console_script_exit_code(tmp_path):
    proc = subprocess.run([str(CURATE), "--plugin", "no-such", "plugins"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no-such" in proc.stderr


SLOW_RUN = textwrap.dedent("""
    import sys, time
    from dualcurate import (Filter, PluginHost, Pipeline, Sample, Source, StageConfig,
                            hookimpl, load_recipe)

    class Src(Source):
        name = "src"
        def read(self, ctx):
            yield [Sample(source="s", question=f"q{i}", answer=str(i)).to_row()
                   for i in range(40)]

    class Slow(Filter):
        name = "slow"
        def process(self, rows, ctx):
            time.sleep(0.4)
            with open(sys.argv[2], "a") as fh:
                fh.write(f"{len(rows)}\\n")
            return [{**r, "keep": True} for r in rows]

    class P:
        @hookimpl
        def dualcurate_register_sources(self, register):
            register(Src)
        @hookimpl
        def dualcurate_register_filters(self, register):
            register(Slow)

    host = PluginHost(autoload=False)
    host.register(P(), name="p")
    recipe = load_recipe({"run": {"shard_size": 4}, "source": {"use": "src"},
                          "filter": {"use": "slow"}})
    Pipeline(recipe, host=host).run(sys.argv[1])
""")


def test_sigkill_mid_stage_then_resume(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_RUN)
    log = tmp_path / "calls.log"
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(log)])
    deadline = time.time() + 60
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = len(log.read_text().splitlines())
    assert first < 10, "the run finished before it was killed"
    subprocess.run([sys.executable, str(script), str(run_dir), str(log)], check=True,
                   timeout=120)
    from dualcurate import RunStore

    store = RunStore(run_dir, create=False)
    ids = store.dataset("filter")["id"]
    assert len(ids) == 40 and len(set(ids)) == 40
    total_calls = len(log.read_text().splitlines())
    # every shard processed once, plus at most the one in flight when killed
    assert 10 <= total_calls <= 11
    assert store.manifest["status"] == "done"


@pytest.mark.parametrize("args", [["validate"], ["inspect"], ["export", "x"]])
def test_missing_arguments_are_usage_errors(run_cli, args):
    assert run_cli(*args).exit_code == 2
