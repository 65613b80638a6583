"""Items 12 and 15 through the real ``curate`` process: with autoload off only the plugins a
recipe names are imported, and every loaded plugin is in the manifest; a disk that fills up
(or turns read-only) mid-stage gives a clear error, keeps what was committed and resumes."""

from __future__ import annotations

import errno
import importlib.metadata as md
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from .helpers import (
    CURATE,
    SECRET,
    clean_env,
    curate,
    distill_recipe,
    rows,
    start_server,
    teacher,
    write_questions,
)

pytestmark = pytest.mark.faults
N = 40
OTHER_PLUGIN_MODULES = ("dualcurate_trl", "dualcurate_difficulty", "dualcurate_verify",
                        "dualcurate_dualtuning", "dualcurate_synthetic", "dualcurate_vllm",
                        "dualcurate_hello")

# `curate ...` in this process; on exit, the dualcurate plugin modules it imported.
WITH_MODULES = textwrap.dedent("""
    import json, sys
    from dualcurate.cli import main
    try:
        main(sys.argv[2:])
    finally:
        with open(sys.argv[1], "w") as fh:
            json.dump(sorted(m for m in sys.modules if m.startswith("dualcurate_")), fh)
""")


@pytest.fixture
def server():
    srv = start_server(teacher)
    yield srv
    srv.stop()


@pytest.mark.parametrize("autoload", [False, True], ids=["autoload-off", "autoload-on"])
def test_only_named_plugins_load_and_the_manifest_records_them(tmp_path: Path, server,
                                                               autoload: bool) -> None:
    recipe = distill_recipe(tmp_path / "recipe.toml", write_questions(tmp_path / "q.jsonl", 8),
                            server.base_url)
    env = clean_env() if autoload else clean_env(DUALCURATE_DISABLE_PLUGIN_AUTOLOAD="1")
    modules_file = tmp_path / "modules.json"
    proc = subprocess.run([str(CURATE.parent / "python"), "-c", WITH_MODULES, str(modules_file),
                           "run", str(recipe), "--out", str(tmp_path / "run")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    eps = {ep.name: ep for ep in md.entry_points(group="dualcurate")}
    expected = set(eps) if autoload else {"hf-dataset", "openai-distill"}
    assert set(manifest["plugins"]) == expected | {"builtins"}
    for name, version in manifest["plugins"].items():
        dist = "dualcurate" if name == "builtins" else eps[name].dist.name
        assert version == md.version(dist), name
    assert {s["plugin"] for s in manifest["stages"]} <= set(manifest["plugins"])
    if not autoload:
        imported = json.loads(modules_file.read_text())
        assert not [m for m in imported if m.startswith(OTHER_PLUGIN_MODULES)], imported
        print(f"\nitem 12: autoload off: manifest plugins {sorted(manifest['plugins'])}; "
              f"plugin packages imported: {sorted({m.split('.')[0] for m in imported})}")


# `curate run` whose storage fails with ERRNO when the second distill shard is committed.
FAILING_DISK = textwrap.dedent("""
    import errno, os, sys
    real_replace = os.replace
    def replace(src, dst):
        if str(dst).endswith(os.path.join("distill", "shard-00001.parquet")):
            raise OSError(int(sys.argv[1]), os.strerror(int(sys.argv[1])))
        return real_replace(src, dst)
    os.replace = replace
    from dualcurate.cli import main
    main(sys.argv[2:])
""")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_storage_failure_mid_stage_is_clear_and_resumes(tmp_path: Path, server, code: int):
    recipe = distill_recipe(tmp_path / "recipe.toml", write_questions(tmp_path / "q.jsonl", N),
                            server.base_url)
    run_dir = tmp_path / "run"
    env = clean_env(FAULT_TEST_API_KEY=SECRET)
    failed = subprocess.run([str(CURATE.parent / "python"), "-c", FAILING_DISK, str(code),
                             "run", str(recipe), "--out", str(run_dir)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    message = " ".join(failed.stderr.split())
    print(f"\nitem 15 ({errno.errorcode[code]}): exit {failed.returncode}: "
          f"{message[message.find('error:'):][:240]}")
    assert failed.returncode == 2
    assert os.strerror(code) in message and "shard-00001.parquet" in message
    assert "rerun the same command to resume" in message
    assert "Traceback" not in failed.stderr and SECRET not in failed.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert [len(r["traces"]) for r in rows(run_dir, "distill")] == [1] * 16  # shard 0 is intact
    assert not [p for p in (run_dir / "distill").iterdir() if p.name.startswith(".tmp-")]

    server.reset()
    result = curate("run", str(recipe), "--out", str(run_dir), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    # shard 1's answers were cached before its write failed, and so were those of the shards
    # streaming after it: only what was never answered is sent again
    assert server.count <= N - 32
    distilled = rows(run_dir, "distill")
    assert len(distilled) == N == len({r["id"] for r in distilled})
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "done"
