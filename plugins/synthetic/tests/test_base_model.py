"""The demo's base model: built once per settings, reused after, loadable like any model."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from dualcurate_synthetic.basemodel import (
    MARKER,
    build_tokenizer,
    encode_example,
    ensure_base_model,
)
from dualcurate_synthetic.families import digit_sum
from dualcurate_synthetic.source import BaseModelSettings, SyntheticSource

TINY = BaseModelSettings(hidden_size=32, layers=1, heads=2, steps=2, batch_size=4,
                         examples_per_family=3, threads=1)


def test_built_once_then_reused_and_rebuilt_on_new_settings(tmp_path):
    logs: list[str] = []
    path = ensure_base_model(tmp_path / "base", TINY, seed=0, log=logs.append)
    marker = json.loads((path / MARKER).read_text())
    assert marker["settings"]["steps"] == 2 and list(path.glob("*.safetensors"))
    weights = next(path.glob("*.safetensors"))
    mtime = weights.stat().st_mtime_ns
    ensure_base_model(tmp_path / "base", TINY, seed=0, log=logs.append)
    assert weights.stat().st_mtime_ns == mtime  # reused, not rebuilt
    ensure_base_model(tmp_path / "base", TINY.model_copy(update={"steps": 3}), seed=0,
                      log=logs.append)
    assert json.loads((path / MARKER).read_text())["settings"]["steps"] == 3
    assert any("rebuilding" in line for line in logs)


def test_loads_with_auto_classes_and_generates(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_base_model(tmp_path / "base", TINY, seed=1, log=lambda m: None)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    enc = tok(["<|im_start|>user\nhi<|im_end|>\n"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 3


def test_content_is_characters_fixed_wording_is_whole_and_only_the_completion_is_learned():
    import random

    from dualcurate_synthetic.families import PHRASES

    tok = build_tokenizer()
    puzzle = digit_sum(random.Random(0))
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


def test_source_setup_builds_the_base_model(tmp_path, stage_context):
    stage = SyntheticSource({"train_per_family": 1, "eval_per_family": 1,
                             "base_model_dir": str(tmp_path / "m"),
                             "base_model": TINY.model_dump()})
    stage.setup(stage_context)
    assert (tmp_path / "m" / MARKER).exists()
