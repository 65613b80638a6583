"""Item 11: nothing dualcurate loads can run code. Model weights come from safetensors (or a
``weights_only`` load that executes nothing), checkpoint optimizer/RNG files are checked with
``torch.load(weights_only=True)`` before a resume, a planted pickle payload is refused and
never runs, and ``trust_remote_code`` stays off unless a recipe pins a commit and says so."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("core/src/**/*.py"), *ROOT.glob("plugins/*/src/**/*.py")])
PINNED = "0123456789abcdef0123456789abcdef01234567"


class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def plant(path: Path, marker: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model.embed_tokens.weight": Payload(marker)}, path)


def test_a_pickle_only_model_never_runs_its_payload(tmp_path: Path) -> None:
    """A model folder whose weights are a pickle (pytorch_model.bin) with a payload."""
    from dualcurate_hf.engine import HFEngine

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "vocab_size": 64}))
    marker = tmp_path / "pwned"
    plant(model / "pytorch_model.bin", marker)
    with pytest.raises(Exception) as refused:
        HFEngine({"model": str(model)}).setup()
    print(f"\nitem 11: hf engine on a pickle-only model: {type(refused.value).__name__}: "
          f"{str(refused.value)[:160]}")
    assert not marker.exists(), "the pickle payload ran"


def test_safetensors_win_over_a_planted_pickle(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from dualcurate_hf.engine import HFEngine

    model = tmp_path / "model"
    shutil.copytree(tiny_lm_dir, model)
    assert list(model.glob("*.safetensors"))
    marker = tmp_path / "pwned"
    plant(model / "pytorch_model.bin", marker)
    engine = HFEngine({"model": str(model), "device": "cpu"})
    engine.setup()
    engine.close()
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.parametrize("planted", ["rng_state.pth", "optimizer.pt", "scheduler.pt"])
def test_a_tampered_checkpoint_file_is_refused_before_resume(tmp_path: Path, planted: str):
    import torch
    from safetensors.torch import save_file

    from dualcurate_trl.checkpoints import verify_checkpoint
    from dualcurate_trl.errors import TrainerError

    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(checkpoint / "model.safetensors"))
    torch.save({"python": torch.zeros(1)}, checkpoint / "rng_state.pth")  # a clean one
    verify_checkpoint(checkpoint)  # passes while nothing is tampered with
    marker = tmp_path / "pwned"
    plant(checkpoint / planted, marker)
    with pytest.raises(TrainerError, match=planted):
        verify_checkpoint(checkpoint)
    assert not marker.exists(), "the pickle payload ran"


UNSAFE = [
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"\b(?:joblib|dill|cloudpickle)\.load"), "pickle-based loader"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle=True"),
    (re.compile(r"trust_remote_code\s*[:=]\s*(?:bool\s*=\s*)?True"), "trust_remote_code on"),
    (re.compile(r"weights_only\s*=\s*False"), "torch.load(weights_only=False)"),
]


def torch_load_calls(text: str) -> list[str]:
    """The argument text of every ``torch.load(...)`` call (balanced parentheses)."""
    calls = []
    for match in re.finditer(r"\btorch\.load\(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        calls.append(text[match.end():i - 1])
    return calls


def test_no_source_file_loads_a_pickle_unsafely() -> None:
    assert len(SOURCES) > 50
    problems = []
    for path in SOURCES:
        text = path.read_text()
        rel = path.relative_to(ROOT)
        problems += [f"{rel}: {what}" for pattern, what in UNSAFE if pattern.search(text)]
        problems += [f"{rel}: torch.load({args}) without weights_only=True"
                     for args in torch_load_calls(text) if "weights_only=True" not in args]
    assert problems == []


def test_trust_remote_code_is_off_by_default_everywhere() -> None:
    from dualcurate import PluginHost

    host = PluginHost(autoload=True)
    seen = []
    for kind in ("engine", "source", "distiller", "verifier", "filter", "trainer",
                 "efficacy_judge"):
        for name in host.names(kind):
            field = host.get(kind, name).Config.model_fields.get("trust_remote_code")
            if field is not None:
                seen.append(name)
                assert field.default is False, f"{kind} {name}: trust_remote_code defaults on"
    assert "hf" in seen


@pytest.mark.parametrize(("revision", "ok"), [(None, False), ("main", False), (PINNED, True)])
def test_trust_remote_code_needs_a_pinned_commit_in_the_recipe(run_cli, tmp_path: Path,
                                                               revision: str | None, ok: bool):
    pin = f'revision = "{revision}"' if revision else ""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"""
[source]
use = "hello"
[distill]
use = "hf-distill"
[distill.engine]
model = "some-org/custom-model"
trust_remote_code = true
{pin}
""")
    result = run_cli("validate", str(recipe))
    text = " ".join((result.stdout + result.stderr).split())
    if ok:
        assert result.exit_code == 0, text
    else:
        assert result.exit_code == 2, text
        assert "trust_remote_code" in text and "40 hex digits" in text
