"""Trust the run (issue 16): model identity in cache keys and signatures, file contents and
code versions in signatures, downstream shards redone after an upstream rewrite, one
precedence rule for options, validation along the stage chain, the run lock, plugin-name
suggestions."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dualcurate.fingerprint as fp
import dualcurate.recipe as recipe_mod
from dualcurate import (
    Filter,
    MapStage,
    Pipeline,
    RecipeError,
    Register,
    RunStore,
    StageConfig,
    StoreError,
    hookimpl,
    load_recipe,
)
from dualcurate.cache import cache_keys
from dualcurate.chat import ChatRequest
from dualcurate.engine import Engine, EngineConfig
from dualcurate.errors import UnknownComponentError
from dualcurate.plugins import PluginHost
from dualcurate.recipe import EngineRef
from dualcurate.sampling import SamplingParams

from .conftest import RECIPE, DoubleStage, EvenFilter


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DUALCURATE_HASH_CACHE", str(tmp_path / "hashes.sqlite"))
    monkeypatch.setattr(fp, "_MEMO", {})


class TinyConfig(EngineConfig):
    dtype: str = "auto"
    max_model_len: int | None = None
    llm_kwargs: dict = {}
    batch_size: int = 1
    runtime_fields = frozenset({"batch_size"})


class TinyEngine(Engine):
    name = "tiny"
    Config = TinyConfig


def keys(**options) -> list[str]:
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], n=2)
    return cache_keys(TinyEngine(options), request, SamplingParams(seed=1))


def make_model(folder: Path, weights: bytes = b"a" * 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


# 1. model identity ----------------------------------------------------------------------------
def test_a_model_retrained_in_place_changes_every_cache_key(tmp_path):
    model = make_model(tmp_path / "m")
    before = keys(model=str(model))
    assert keys(model=str(model)) == before  # stable
    (model / "model.safetensors").write_bytes(b"b" * 64)  # same name, same size
    assert set(keys(model=str(model))).isdisjoint(before)
    (model / "tokenizer.json").write_text('{"v": 2}')
    assert keys(model=str(model)) != before
    # a README is not the model
    current = keys(model=str(model))
    (model / "README.md").write_text("notes")
    assert keys(model=str(model)) == current


def test_engine_settings_that_change_outputs_are_in_the_key_runtime_ones_not(tmp_path):
    model = str(make_model(tmp_path / "m"))
    base = keys(model=model)
    for option in ({"dtype": "float32"}, {"max_model_len": 512},
                   {"llm_kwargs": {"quantization": "awq"}}):
        assert keys(model=model, **option) != base, option
    assert keys(model=model, batch_size=64) == base


def test_hub_ids_are_keyed_by_the_revision_they_resolve_to(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = tmp_path / "hub" / "models--org--tiny" / "refs" / "main"
    no_cache = keys(model="org/tiny")
    ref.parent.mkdir(parents=True)
    ref.write_text("a" * 40)
    first = keys(model="org/tiny")
    ref.write_text("b" * 40)  # the cached main moved to another commit
    assert len({tuple(no_cache), tuple(first), tuple(keys(model="org/tiny"))}) == 3
    assert fp.model_fingerprint("org/tiny", "c" * 40)["resolved"] == "c" * 40


def test_file_hashes_are_computed_once_per_size_and_mtime(tmp_path, monkeypatch):
    big = tmp_path / "weights.safetensors"
    big.write_bytes(os.urandom(1 << 16))
    old = 1_600_000_000
    os.utime(big, (old, old))  # not written in the last seconds: its hash may be kept
    reads = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        if str(path) == str(big.resolve()):
            reads.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    digest = fp.file_digest(big)
    monkeypatch.setattr(fp, "_MEMO", {})  # a new process: only the on-disk cache is left
    assert fp.file_digest(big) == digest
    assert len(reads) == 1
    big.write_bytes(os.urandom(1 << 16))
    assert fp.file_digest(big) != digest
    assert len(reads) == 2
    # just written: hashed again each time (a rewrite in the same mtime tick must show)
    fp.file_digest(big)
    assert len(reads) == 3


# 2. signatures cover files, models and code ------------------------------------------------------
class PromptConfig(StageConfig):
    template: str
    engine: EngineRef | None = None


class PromptStage(MapStage):
    """Adds `prompt`: the template file's text (read once at setup)."""

    name = "prompt"
    kind = "distiller"
    Config = PromptConfig
    provides = ("prompt",)

    def setup(self, ctx):
        self.text = Path(self.config.template).read_text()

    def process(self, rows, ctx):
        return [{**r, "prompt": self.text} for r in rows]


class TrustPlugin:
    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        register(PromptStage)


@pytest.fixture
def host(core_host, register_plugin):
    register_plugin(TrustPlugin(), name="trust-test")
    return core_host


def test_editing_a_template_in_place_recomputes_the_stage(host, tmp_path):
    template = tmp_path / "prompt.jinja"
    template.write_text("v1 {{ question }}")
    recipe = {**RECIPE, "distill": {"use": "prompt", "template": str(template)}}
    run = lambda: Pipeline(load_recipe(copy.deepcopy(recipe)), host=host).run(tmp_path / "r")  # noqa: E731
    assert set(run().dataset("distill")["prompt"]) == {"v1 {{ question }}"}
    template.write_text("v2 {{ question }}")
    store = run()
    assert set(store.dataset("distill")["prompt"]) == {"v2 {{ question }}"}


def test_signatures_cover_models_and_code_versions(tmp_path, monkeypatch):
    import dualcurate.stages as stages

    template = tmp_path / "t.jinja"
    template.write_text("x")
    model = make_model(tmp_path / "m")
    stage = lambda: PromptStage({"template": str(template),  # noqa: E731
                                 "engine": {"use": "any", "model": str(model)}})
    first = stage().signature()
    (model / "model.safetensors").write_bytes(b"z" * 64)
    second = stage().signature()
    assert second != first
    monkeypatch.setattr(PromptStage, "code_dependencies", ("dualcurate",))
    with_core = stage().signature()
    assert stages.code_versions(PromptStage)["dualcurate"]
    monkeypatch.setattr(recipe_mod, "_dist_version", lambda dist: "999.0")
    assert stage().signature() != with_core


def test_downstream_shards_are_redone_after_an_upstream_rewrite_even_across_failures(
        core_host, tmp_path, monkeypatch):
    """The filter fails midway; the distiller then rewrites shard 0 (its failed requests
    now succeed); a kill stops that run before the filter; the next run redoes the filter's
    shard 0 from the new rows."""
    offset = {"value": 0}
    fail = {"filter_calls": None}
    original_double, original_even = DoubleStage.process, EvenFilter.process

    def double(self, rows, ctx):
        return [{**r, "doubled": int(r["answer"]) * 2 + offset["value"]}
                for r in original_double(self, rows, ctx)]

    def even(self, rows, ctx):
        if fail["filter_calls"] is not None:
            fail["filter_calls"] -= 1
            if fail["filter_calls"] < 0:
                raise RuntimeError("filter fails")
        return [{**r, "seen_doubled": r["doubled"]} for r in original_even(self, rows, ctx)]

    monkeypatch.setattr(DoubleStage, "process", double)
    monkeypatch.setattr(EvenFilter, "process", even)
    run = lambda: Pipeline(load_recipe(copy.deepcopy(RECIPE)), host=core_host).run(tmp_path / "r")  # noqa: E731
    fail["filter_calls"] = 1  # the filter commits shard 0, then fails
    with pytest.raises(Exception, match="filter fails"):
        run()
    store = RunStore(tmp_path / "r", create=False)
    assert store.finished_shards("filter") == [0]
    # the distiller's shard 0 had failed requests: the next run redoes it, with new output
    rec = store.stage_record("distill")
    rec["retry_shards"] = [0]
    store.save_manifest()
    offset["value"] = 1000
    fail["filter_calls"] = 0  # killed before the filter commits anything
    with pytest.raises(Exception, match="filter fails"):
        run()
    fail["filter_calls"] = None
    store = run()
    assert store.dataset("filter")["seen_doubled"] == store.dataset("distill")["doubled"]
    assert [v >= 1000 for v in store.dataset("filter")["seen_doubled"]] == [True] * 4 + [False] * 6


# 3. one precedence rule -------------------------------------------------------------------------
def test_set_wins_over_the_plugin_table_and_explain_says_where_each_option_comes_from(
        core_host):
    recipe = {**RECIPE, "distill": {"use": "double", "factor": 3,
                                    "plugins": {"double": {"factor": 5, "batch_size": 2}}}}
    pipeline = Pipeline(load_recipe(copy.deepcopy(recipe)), host=core_host)
    stage = {r.name: r for r in pipeline.validate()}["distill"].stage
    assert stage.config.factor == 5  # the plugin table over the stage table
    pipeline = Pipeline(load_recipe(copy.deepcopy(recipe), ["distill.factor=8"]),
                        host=core_host)
    assert {r.name: r for r in pipeline.validate()}["distill"].stage.config.factor == 8
    explained = {s["stage"]: {o["option"]: o for o in s["options"]}
                 for s in pipeline.explain()}
    assert explained["distill"]["factor"]["origin"] == "--set"
    assert explained["distill"]["batch_size"]["origin"] == "[distill.plugins.double]"
    assert explained["distill"]["batch_size"]["runtime"] is True
    assert explained["source"]["n"]["origin"] == "[source]"
    assert explained["source"]["domains"]["origin"] == "default"


class OnlyFactorConfig(StageConfig):
    factor: int = 2


class OtherDouble(DoubleStage):
    name = "other-double"
    Config = OnlyFactorConfig


class OtherPlugin:
    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        register(OtherDouble)


def test_plugin_swap_keeps_only_its_options_and_says_what_it_dropped(core_host,
                                                                     register_plugin):
    register_plugin(OtherPlugin(), name="other-double")
    recipe = {**RECIPE, "distill": {"use": "double", "factor": 3, "batch_size": 4}}
    pipeline = Pipeline(load_recipe(copy.deepcopy(recipe)), host=core_host,
                        selected=["other-double"])
    stage = {r.name: r for r in pipeline.validate()}["distill"]
    assert stage.plugin == "other-double" and stage.stage.config.factor == 3
    assert len(pipeline.notes) == 1
    assert "other-double" in pipeline.notes[0] and "batch_size" in pipeline.notes[0]
    assert "double" in pipeline.notes[0]
    # an option set explicitly for the run is never dropped silently: refused, naming both
    with pytest.raises(RecipeError) as err:
        Pipeline(load_recipe(copy.deepcopy(recipe), ["distill.batch_size=9"]), host=core_host,
                 selected=["other-double"]).validate()
    assert "plugin 'other-double'" in str(err.value) and "--set" in str(err.value)


def test_cli_explain_shows_the_set_value_over_the_plugin_table(run_cli):
    recipe = Path(run_cli("plugins").cwd) / "r.toml"
    recipe.write_text(textwrap.dedent("""
        [source]
        use = "synthetic"
        train_per_family = 2
        eval_per_family = 1
        [distill]
        use = "reference"
        [distill.plugins.reference]
        samples_per_question = 1
    """))
    result = run_cli("validate", str(recipe), "--explain", "--set",
                     "distill.samples_per_question=8")
    assert result.exit_code == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if "samples_per_question" in x)
    assert "= 8" in line and "(--set)" in line


# 4. validation along the chain -----------------------------------------------------------------
class NeedsTraces(Filter):
    name = "needs-traces"
    Config = StageConfig
    requires = ("traces",)

    def process(self, rows, ctx):
        return rows


class NeedsPlugin:
    @hookimpl
    def dualcurate_register_filters(self, register: Register) -> None:
        register(NeedsTraces)


def test_requires_is_checked_along_the_stage_chain(core_host, register_plugin):
    register_plugin(NeedsPlugin(), name="needs")
    recipe = {"run": {"shard_size": 4}, "source": {"use": "counting"},
              "filter": {"use": "needs-traces"}}
    with pytest.raises(RecipeError) as err:
        Pipeline(load_recipe(recipe), host=core_host).validate()
    assert "[filter] (needs-traces) requires column(s) traces" in str(err.value)


# 6. the run lock --------------------------------------------------------------------------------
def test_a_second_process_on_a_run_in_use_exits_2_naming_the_holder(core_host, tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from dualcurate.store import RunStore
            with RunStore({str(run_dir)!r}).lock():
                print("locked", flush=True)
                sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError) as err:
            Pipeline(load_recipe(copy.deepcopy(RECIPE)), host=core_host).run(run_dir)
        assert err.value.exit_code == 2
        assert f"process {holder.pid}" in str(err.value)
        assert socket.gethostname() in str(err.value)
        assert not RunStore(run_dir).finished_shards("source")  # nothing was written
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    store = Pipeline(load_recipe(copy.deepcopy(RECIPE)), host=core_host).run(run_dir)
    assert store.manifest["status"] == "done"  # released when its holder exits
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "done"


# 7. suggestions from installed names -------------------------------------------------------------
def test_unknown_plugin_suggests_installed_near_matches_not_invented_packages():
    with pytest.raises(UnknownComponentError) as err:
        PluginHost(autoload=False).load("synthetc")
    assert "Did you mean 'synthetic'" in str(err.value)
    with pytest.raises(UnknownComponentError) as err:
        PluginHost(autoload=False).load("lenght-filter")
    assert "pip install" not in str(err.value)


def test_the_verifier_contract_gives_traces_so_a_verifier_that_sets_no_verdict_fails(
        stage_context):
    from dualcurate import Verifier
    from dualcurate.testing.contracts import VerifierContract

    class SetsNothing(Verifier):
        name = "sets-nothing"
        Config = StageConfig

        def process(self, rows, ctx):
            return rows

    class Suite(VerifierContract):
        stage_cls = SetsNothing

    suite = Suite()
    rows = Suite.rows.__wrapped__(suite)
    assert all(len(r["traces"]) == 3 for r in rows)
    with pytest.raises(AssertionError):
        suite.test_every_trace_gets_a_verdict(rows, stage_context)


def _fake_distribution(site: Path, version: str = "1.0", editable: bool = True) -> Path:
    """A package ``fakeplug`` with its dist-info on ``site``, installed editable or not."""
    package = site / "fakeplug"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "stage.py").write_text("X = 1\n")
    info = site / f"fakeplug-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakeplug\nVersion: {version}\n")
    (info / "top_level.txt").write_text("fakeplug\n")
    direct = {"url": f"file://{site}", "dir_info": {"editable": editable}}
    (info / "direct_url.json").write_text(json.dumps(direct))
    return package


@pytest.mark.parametrize("editable", [True, False])
def test_editing_an_editable_plugin_in_place_changes_its_code_version(tmp_path, monkeypatch,
                                                                       editable):
    """`pip install -e` keeps the version while the code changes: the signature must not."""
    import sys

    package = _fake_distribution(tmp_path / "site", editable=editable)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for cached in (recipe_mod._module_distributions, recipe_mod._dist_version, recipe_mod._editable,
                   recipe_mod._editable_source):
        cached.cache_clear()
    monkeypatch.delitem(sys.modules, "fakeplug", raising=False)
    cls = type("Probe", (MapStage,), {"__module__": "fakeplug.stage"})
    try:
        before = recipe_mod.code_versions(cls)["fakeplug"]
        (package / "stage.py").write_text("X = 2\n")  # edited in place, same version
        (package / "__pycache__").mkdir()
        (package / "__pycache__" / "stage.cpython-311.pyc").write_bytes(b"noise")
        recipe_mod._editable_source.cache_clear()
        after = recipe_mod.code_versions(cls)["fakeplug"]
    finally:
        for cached in (recipe_mod._module_distributions, recipe_mod._dist_version, recipe_mod._editable,
                       recipe_mod._editable_source):
            cached.cache_clear()
    if editable:
        assert before.startswith("1.0+src.") and after.startswith("1.0+src.") and before != after
    else:
        assert before == after == "1.0"


def test_source_hash_covers_contents_and_names_not_bytecode(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "a.py").write_text("a = 1\n")
    first = recipe_mod.source_hash([root])
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    assert recipe_mod.source_hash([root]) == first
    (root / "a.py").write_text("a = 2\n")
    assert recipe_mod.source_hash([root]) != first
    (root / "a.py").write_text("a = 1\n")
    (root / "a.py").rename(root / "b.py")
    assert recipe_mod.source_hash([root]) != first
