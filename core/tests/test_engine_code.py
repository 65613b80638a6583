"""Code edits to engines count (issue 24): the version of an engine's code (an editable
install's source hash included) is in the signature of every stage that runs it and in the
identity its cached generations are keyed by."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dualcurate.engine as engine_mod
import dualcurate.fingerprint as fp
import dualcurate.recipe as recipe_mod
from dualcurate import Engine, EngineConfig
from dualcurate.cache import cache_keys
from dualcurate.chat import ChatRequest
from dualcurate.distill import TeacherDistiller
from dualcurate.engine import engine_identity
from dualcurate.recipe import EngineRef, StageConfig, VerifierRef, check_refs
from dualcurate.sampling import SamplingParams
from dualcurate.stages import Verifier

CACHED = (recipe_mod._module_distributions, recipe_mod._dist_version, recipe_mod._editable,
          recipe_mod._editable_source)


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DUALCURATE_HASH_CACHE", str(tmp_path / "hashes.sqlite"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(fp, "_MEMO", {})


class PlainEngine(Engine):
    name = "plain"
    Config = EngineConfig


def identity_with(versions: dict[str, str | None]) -> dict:
    with mock.patch.object(engine_mod, "code_versions", lambda cls: dict(versions)):
        return engine_identity(PlainEngine({"model": "org/m"}))


def keys_with(versions: dict[str, str | None]) -> list[str]:
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], n=2)
    with mock.patch.object(engine_mod, "code_versions", lambda cls: dict(versions)):
        return cache_keys(PlainEngine({"model": "org/m"}), request, SamplingParams(seed=1))


versions = st.dictionaries(st.sampled_from(["dualcurate-hf", "dualcurate-vllm", "plug"]),
                           st.none() | st.text(min_size=1, max_size=12), max_size=3)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(versions, versions)
def test_the_engine_identity_and_cache_keys_change_iff_the_code_version_does(a, b):
    assert (identity_with(a) == identity_with(b)) == (a == b)
    assert (keys_with(a) == keys_with(b)) == (a == b)
    if a != b:
        assert set(keys_with(a)).isdisjoint(keys_with(b))


def test_the_engine_identity_holds_the_distribution_version_of_the_engine_class():
    from dualcurate_hf.engine import HFEngine  # a real plugin engine, installed

    ident = engine_identity(HFEngine({"model": "org/m"}))
    assert set(ident["code"]) == {"dualcurate-hf"}
    assert ident["code"]["dualcurate-hf"] == recipe_mod.code_versions(HFEngine)["dualcurate-hf"]
    assert ident["code"]["dualcurate-hf"].startswith(recipe_mod._dist_version("dualcurate-hf"))


# signatures of the stages that use a component ---------------------------------------------
class JudgeConfig(StageConfig):
    engine: EngineRef


class JudgingVerifier(Verifier):
    """A verifier whose options name an engine of their own."""

    name = "judging"
    Config = JudgeConfig


class VerifiersConfig(StageConfig):
    verifiers: list[VerifierRef] = []


class Host:
    """The part of a PluginHost that check_refs uses."""

    def __init__(self, classes: dict[tuple[str, str], type]):
        self.classes = classes

    def get(self, kind, name):
        return self.classes[kind, name]


def test_every_resolved_component_reference_brings_its_code_version_into_the_signature():
    host = Host({("engine", "plain"): PlainEngine, ("verifier", "judging"): JudgingVerifier})
    teacher = TeacherDistiller({"engine": {"use": "plain", "model": "m"}})
    nested = VerifiersConfig(verifiers=[{"use": "judging", "engine": {"use": "plain",
                                                                        "model": "m"}}])
    assert check_refs(teacher.config, host) == [] and check_refs(nested, host) == []
    owners = {PlainEngine: "plain-dist", JudgingVerifier: "judge-dist"}
    real = recipe_mod.code_versions

    def fake(cls, version="1.0"):
        return {owners[cls]: version} if cls in owners else real(cls)

    with mock.patch.object(recipe_mod, "code_versions", fake):
        assert recipe_mod.component_code_versions(teacher.config) == {"plain-dist": "1.0"}
        # the engine a verifier's options name counts as well
        assert recipe_mod.component_code_versions(nested) == {"judge-dist": "1.0",
                                                          "plain-dist": "1.0"}
        before = teacher.signature()
        assert teacher.signature() == before
    with mock.patch.object(recipe_mod, "code_versions",
                           lambda cls: fake(cls, "1.0+src.0123abcd")):
        assert teacher.signature() != before
        edited = recipe_mod.component_code_versions(nested)
    assert edited == {"judge-dist": "1.0+src.0123abcd", "plain-dist": "1.0+src.0123abcd"}


# as a plugin author would: an engine plugin installed editable, edited, rerun ----------------
ENGINE_SOURCE = '''\
import os

from dualcurate import Completion, Engine, EngineConfig, hookimpl
from dualcurate.formats import render_trace

STYLE = "{style}"


class AuthorEngine(Engine):
    name = "author-echo"
    Config = EngineConfig

    def generate(self, requests, sampling, on_result=None):
        out = []
        for i, request in enumerate(requests):
            with open(os.environ["AUTHOR_REQUESTS"], "a") as log:
                log.write(f"{{len(request.indices())}}\\n")
            comps = [Completion(text=render_trace(STYLE + " reasoning", "0"),
                                finish_reason="stop", completion_tokens=2)
                     for _ in request.indices()]
            out.append(comps)
            if on_result:
                on_result(i, comps)
        return out


class Plugin:
    @hookimpl
    def dualcurate_register_engines(self, register):
        register(AuthorEngine)


plugin = Plugin()
'''

SOURCE_SOURCE = '''\
from dualcurate import Sample, Source, StageConfig, hookimpl


class RowsConfig(StageConfig):
    n: int = 6


class AuthorRows(Source):
    name = "author-rows"
    Config = RowsConfig

    def read(self, ctx):
        yield [Sample(source="author", domain="math", question=f"{i} + {i}?",
                      answer=str(2 * i), answer_type="number").to_row()
               for i in range(self.config.n)]


class Plugin:
    @hookimpl
    def dualcurate_register_sources(self, register):
        register(AuthorRows)


plugin = Plugin()
'''


def install_editable(site: Path, name: str, source: str, version: str = "0.1.0") -> Path:
    """What ``pip install -e`` leaves: the package in its own project folder (which the
    caller puts on the path, as the installed ``.pth`` file would) and, on ``site``, a
    dist-info with an entry point and ``direct_url.json`` saying editable."""
    project = site.parent / f"{name}-project"
    package = project / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(source)
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{name}\n")
    (info / "entry_points.txt").write_text(f"[dualcurate]\n{name} = {name}:plugin\n")
    (info / "direct_url.json").write_text(json.dumps(
        {"url": project.as_uri(), "dir_info": {"editable": True}}))
    return package / "__init__.py"


def test_editing_an_editable_engine_plugin_recomputes_the_stage_that_runs_it(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    engine_file = install_editable(site, "authorengine", ENGINE_SOURCE.format(style="v1"))
    install_editable(site, "authorsource", SOURCE_SOURCE)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(textwrap.dedent("""\
        [run]
        shard_size = 4

        [source]
        use = "author-rows"

        [distill]
        use = "teacher"
        engine = { use = "author-echo", model = "m" }
    """))
    requests = tmp_path / "requests.log"
    paths = [str(site), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    paths[1:1] = [str(tmp_path / "authorengine-project"), str(tmp_path / "authorsource-project")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "AUTHOR_REQUESTS": str(requests),
           "DUALCURATE_DISABLE_PLUGIN_AUTOLOAD": "1",
           "DUALCURATE_PLUGINS": "authorengine,authorsource", "PYTHONDONTWRITEBYTECODE": "1"}
    out = tmp_path / "run"

    def run() -> tuple[int, str]:
        sent = len(requests.read_text().splitlines()) if requests.exists() else 0
        result = subprocess.run(
            [sys.executable, "-c", "from dualcurate.cli import main; main()", "run",
             str(recipe), "--out", str(out), "--no-report"],
            env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        now = len(requests.read_text().splitlines()) if requests.exists() else 0
        return now - sent, result.stdout + result.stderr

    def reasonings() -> set[str]:
        from dualcurate import RunStore

        rows = RunStore(out, create=False).dataset("distill").to_list()
        return {t["reasoning"] for r in rows for t in r["traces"]}

    sent, _ = run()
    assert sent == 6 and reasonings() == {"v1 reasoning"}
    sent, log = run()  # nothing changed: everything is skipped, nothing is sent
    assert sent == 0 and "distill: done already, skipped" in log, log
    engine_file.write_text(ENGINE_SOURCE.format(style="v2"))  # edited in place, same version
    sent, log = run()
    assert "source: done already, skipped" in log, log  # its plugin did not change
    assert "distill: done already, skipped" not in log, log
    # recomputed by the new code, none of its answers taken from the request cache
    assert sent == 6 and reasonings() == {"v2 reasoning"}
    sent, log = run()
    assert sent == 0 and "distill: done already, skipped" in log, log
