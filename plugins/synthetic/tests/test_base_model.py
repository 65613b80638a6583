"""The demo's base model: the ``synthetic-base`` model builder makes a loadable tiny Qwen2, built
once per build options and reused after; the source no longer takes the base model's options."""

from __future__ import annotations

import json

import pytest

from dualcurate import PluginHost, load_recipe
from dualcurate.errors import RecipeError
from dualcurate.models import MARKER, ensure_model
from dualcurate.pipeline import Pipeline
from dualcurate_synthetic.base_model import (
    RECIPE_VERSION,
    BaseModelConfig,
    SyntheticBaseBuilder,
    build_tokenizer,
    encode_example,
)
from dualcurate_synthetic.families import colour_sum
from dualcurate_synthetic.source import SyntheticSource

TINY = {"hidden_size": 32, "intermediate_size": 64, "layers": 1, "heads": 2, "steps": 2,
        "batch_size": 4, "examples_per_family": 3, "threads": 1}


def test_signature_follows_what_changes_the_weights():
    base = SyntheticBaseBuilder(TINY).signature()
    assert SyntheticBaseBuilder({**TINY, "threads": 2}).signature() == base  # runtime only
    for change in ({"seed": 1}, {"steps": 3}, {"hidden_size": 64}, {"learning_rate": 0.01},
                   {"families": ["colour-sum"]}, {"examples_per_family": 4}):
        assert SyntheticBaseBuilder({**TINY, **change}).signature() != base, change
    assert SyntheticBaseBuilder.version == str(RECIPE_VERSION)


def test_builder_options_are_checked():
    with pytest.raises(ValueError, match="unknown families"):
        BaseModelConfig(families=["nope"])
    with pytest.raises(ValueError, match="not a multiple of heads"):
        BaseModelConfig(hidden_size=30, heads=4)
    with pytest.raises(ValueError, match="extra"):
        BaseModelConfig(hidden=1)


def test_registered_by_the_synthetic_plugin():
    assert PluginHost().get("model_builder", "synthetic-base") is SyntheticBaseBuilder


@pytest.mark.parametrize("option", ["base_model_dir", "base_model"])
def test_source_refuses_the_old_base_model_options_naming_the_fix(option):
    value = "runs/m" if option == "base_model_dir" else {"steps": 3}
    with pytest.raises(ValueError, match=rf"{option}: the base model is built by the recipe's "
                                         rf"\[models\] table now.*synthetic-base.*docs/demo.md"):
        SyntheticSource({option: value})
    raw = {"source": {"use": "synthetic", option: value}}
    with pytest.raises(RecipeError, match=rf"\[source\].*{option}: .*\[models.base\]"):
        Pipeline(load_recipe(raw), host=PluginHost()).validate()


def test_every_base_model_option_is_a_builder_option():
    """What [source.base_model] held (plus seed and families) is what the builder takes."""
    assert set(BaseModelConfig.model_fields) == {
        "seed", "families", "hidden_size", "intermediate_size", "layers", "heads", "steps",
        "batch_size", "learning_rate", "examples_per_family", "threads"}


@pytest.fixture
def tiny_model(tmp_path, stage_context):
    pytest.importorskip("torch")
    builder = SyntheticBaseBuilder({**TINY, "seed": 1})
    assert ensure_model("base", tmp_path / "base", builder, stage_context)
    return tmp_path / "base"


def test_builds_a_loadable_model_that_generates(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    marker = json.loads((tiny_model / MARKER).read_text())
    assert marker["builder"] == "synthetic-base" and marker["options"]["steps"] == 2
    assert list(tiny_model.glob("*.safetensors"))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 1
    enc = tok(["<|im_start|>user\nhi<|im_end|>\n"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 3


def test_reused_while_unchanged_and_rebuilt_on_new_options(tmp_path, stage_context):
    pytest.importorskip("torch")
    out = tmp_path / "base"
    logs: list[str] = []
    assert ensure_model("base", out, SyntheticBaseBuilder(TINY), stage_context, logs.append)
    weights = next(out.glob("*.safetensors"))
    mtime = weights.stat().st_mtime_ns
    # threads is runtime-only: no rebuild
    assert not ensure_model("base", out, SyntheticBaseBuilder({**TINY, "threads": 2}),
                            stage_context, logs.append)
    assert weights.stat().st_mtime_ns == mtime
    assert ensure_model("base", out, SyntheticBaseBuilder({**TINY, "steps": 3}),
                        stage_context, logs.append)
    assert json.loads((out / MARKER).read_text())["options"]["steps"] == 3
    assert any("built with other options" in line for line in logs)


def test_content_is_characters_fixed_wording_is_whole_and_only_the_completion_is_learned():
    import random

    from dualcurate_synthetic.families import PHRASES

    tok = build_tokenizer()
    puzzle = colour_sum(random.Random(0))
    ids, labels = encode_example(tok, puzzle, "long")
    learned = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
    assert learned.startswith("<think>") and learned.endswith("</answer><|im_end|>")
    # colours, shapes and numbers: one token per character, the same in a caption and an answer
    assert tok.tokenize("123+45=168") == list("123+45=168")
    assert tok("<answer>yellow</answer>")["input_ids"][1:-1] == tok("yellow")["input_ids"]
    assert len(tok("yellow")["input_ids"]) == 6
    # the fixed wording: one token each, and texts round-trip
    for phrase in PHRASES:
        assert len(tok(phrase)["input_ids"]) == 1, phrase
    text = f"{puzzle.caption}\n{puzzle.question}"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_every_phrase_token_occurs_in_the_puzzles_it_is_for():
    """A reworded template would leave its phrase token unused (longer sequences, silently)."""
    import random

    from dualcurate_synthetic.families import GENERATORS, PHRASES, student_question

    rng = random.Random(0)
    texts = " ".join(f"{student_question(p)} {p.solution}" for gen in GENERATORS.values()
                     for p in (gen(rng) for _ in range(200)))
    assert [phrase for phrase in PHRASES if phrase not in texts] == []
