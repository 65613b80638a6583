"""The demo's base model: the ``synthetic-base`` model builder makes a loadable tiny Idefics3
that reads the puzzles' pictures (or a text-only Qwen2 with ``vision = false``), built once per
build options and reused after; the source no longer takes the base model's options."""

from __future__ import annotations

import json
import re

import pytest

from dualcurate import PluginHost, load_recipe
from dualcurate.errors import RecipeError
from dualcurate.models import MARKER, ensure_model
from dualcurate.pipeline import Pipeline
from dualcurate_synthetic.base_model import (
    RECIPE_VERSION,
    BaseModelConfig,
    SyntheticBaseBuilder,
    build_processor,
    build_tokenizer,
    encode_example,
    encode_vision_example,
    render_image,
)
from dualcurate_synthetic.families import COLOURS, GENERATORS, PHRASES, colour_ops
from dualcurate_synthetic.render import RGB, render_png
from dualcurate_synthetic.source import SyntheticSource

TINY = {"hidden_size": 32, "intermediate_size": 64, "layers": 1, "heads": 2, "steps": 2,
        "batch_size": 4, "examples_per_family": 3, "threads": 1, "image_size": 32,
        "vision_hidden_size": 16}


def test_signature_follows_what_changes_the_weights():
    base = SyntheticBaseBuilder(TINY).signature()
    assert SyntheticBaseBuilder({**TINY, "threads": 2}).signature() == base  # runtime only
    for change in ({"seed": 1}, {"steps": 3}, {"hidden_size": 64}, {"learning_rate": 0.01},
                   {"families": ["colour-ops"]}, {"examples_per_family": 4}, {"vision": False},
                   {"image_size": 64}, {"patch_size": 4}, {"vision_hidden_size": 64},
                   {"vision_layers": 2}, {"image_width": 96}, {"image_height": 40}):
        assert SyntheticBaseBuilder({**TINY, **change}).signature() != base, change
    assert SyntheticBaseBuilder.version == str(RECIPE_VERSION)


def test_builder_options_are_checked():
    with pytest.raises(ValueError, match="unknown families"):
        BaseModelConfig(families=["nope"])
    with pytest.raises(ValueError, match="not a multiple of heads"):
        BaseModelConfig(hidden_size=30, heads=4)
    with pytest.raises(ValueError, match="extra"):
        BaseModelConfig(hidden=1)
    with pytest.raises(ValueError, match="image_size 60 must be a multiple of patch_size 8"):
        BaseModelConfig(image_size=60)
    with pytest.raises(ValueError, match=r"image_size 40 must be a multiple.*image_size = 32"):
        BaseModelConfig(image_size=40)  # 5 patches a side: the 2x2 merge needs an even count
    with pytest.raises(ValueError, match="vision_hidden_size 30 is not a multiple"):
        BaseModelConfig(vision_hidden_size=30, vision_heads=4)
    assert BaseModelConfig().image_seq_len == 16 and BaseModelConfig(image_size=32).image_seq_len == 4


def test_pictures_are_drawn_at_the_sources_size_by_default():
    from dualcurate_synthetic.source import SyntheticConfig

    base, source = BaseModelConfig(), SyntheticConfig()
    assert (base.image_width, base.image_height) == (source.image_width, source.image_height)


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
        "batch_size", "learning_rate", "examples_per_family", "threads",
        # the vision-language model's (new with it)
        "vision", "image_size", "patch_size", "vision_hidden_size", "vision_layers",
        "vision_heads", "image_width", "image_height"}


@pytest.fixture
def tiny_model(tmp_path, stage_context):
    pytest.importorskip("torch")
    builder = SyntheticBaseBuilder({**TINY, "seed": 1})
    assert ensure_model("base", tmp_path / "base", builder, stage_context)
    return tmp_path / "base"


def test_builds_a_vision_language_model_that_loads_and_reads_a_picture(tiny_model):
    """Saved as a user's VLM is: AutoProcessor and AutoModelForImageTextToText load it, and
    it generates from a rendered puzzle's picture and the question."""
    import random

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    marker = json.loads((tiny_model / MARKER).read_text())
    assert marker["builder"] == "synthetic-base" and marker["options"]["steps"] == 2
    assert list(tiny_model.glob("*.safetensors"))
    processor = AutoProcessor.from_pretrained(tiny_model)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.head_dim) == (32, 1, 16)
    assert (model.config.vision_config.image_size, model.config.vision_config.patch_size) == (
        32, 8)
    puzzle = colour_ops(random.Random(0))
    ids, labels, pixels = encode_vision_example(processor, puzzle, "short",
                                                render_image(puzzle.items, 256, 72))
    # the picture's tokens: (32 / 8)^2 / 2^2 = 4 image tokens
    assert ids.count(processor.image_token_id) == 4 == processor.image_seq_len
    prompt_len = labels.count(-100)
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids[:prompt_len]]),
                             pixel_values=pixels["pixel_values"][None],
                             pixel_attention_mask=pixels["pixel_attention_mask"][None],
                             max_new_tokens=3, do_sample=False)
    assert prompt_len < out.shape[1] <= prompt_len + 3


def test_text_only_fixture_still_builds_a_causal_lm(tmp_path, stage_context):
    pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "text"
    assert ensure_model("base", out, SyntheticBaseBuilder({**TINY, "vision": False}),
                        stage_context)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 32
    enc = tok(["<|im_start|>user\nhi<|im_end|>\n"], return_tensors="pt")
    generated = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert enc["input_ids"].shape[1] < generated.shape[1] <= enc["input_ids"].shape[1] + 3


def _distinct_colour_scenes(kind: str, count: int) -> list[list[dict]]:
    """Scenes whose four slots have four different colours (any order), with random
    shapes or digits."""
    import itertools
    import random

    rng = random.Random(kind)
    orders = list(itertools.permutations(COLOURS))
    scenes = []
    for _ in range(count):
        colours = rng.choice(orders)
        scenes.append([{"colour": c, "shape": rng.choice(["circle", "square", "triangle",
                                                            "diamond"])}
                       if kind == "shapes" else {"colour": c, "digit": rng.randrange(10)}
                       for c in colours])
    return scenes


@pytest.mark.parametrize("kind", ["shapes"])
@pytest.mark.parametrize("size", [(256, 72), (200, 100)])
def test_saved_processor_keeps_all_four_slots_of_a_wide_scene(tiny_model, kind, size):
    """No centre crop: through the saved processor (AutoProcessor), each slot's colour is in
    its own horizontal quarter of pixel_values, and in no other quarter; nothing is padding."""
    import io

    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    mean = np.array(processor.image_processor.image_mean)[:, None, None]
    std = np.array(processor.image_processor.image_std)[:, None, None]
    for items in _distinct_colour_scenes(kind, 6):
        image = Image.open(io.BytesIO(render_png(kind, items, *size))).convert("RGB")
        enc = processor(text=["<image>"], images=[[image]], return_tensors="np")
        assert enc["pixel_values"].shape == (1, 1, 3, 32, 32)  # one picture, not tiles
        assert enc["pixel_attention_mask"].all()
        rgb = (enc["pixel_values"][0, 0] * std + mean) * 255  # back to 0..255, CHW
        quarter = rgb.shape[2] // 4
        for slot, item in enumerate(items):
            target = np.array(RGB[item["colour"]])[:, None, None]
            close = (np.abs(rgb - target) < 30).all(axis=0)  # pixels of this slot's colour
            columns = close.any(axis=0)
            where = [int(columns[q * quarter:(q + 1) * quarter].sum()) for q in range(4)]
            assert where[slot] >= 2, (kind, size, items, slot, where)
            assert sum(where) == where[slot], (kind, size, items, slot, where)


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
    puzzle = colour_ops(random.Random(0))
    ids, labels, pixels = encode_example(tok, puzzle, "long")
    assert pixels == {}
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

    from dualcurate_synthetic.families import DESCRIBE, GENERATORS, PHRASES, student_question

    rng = random.Random(0)
    texts = " ".join(f"{student_question(p)} {p.solution}" for gen in GENERATORS.values()
                     for p in (gen(rng) for _ in range(200))) + f" {DESCRIBE}"
    assert [phrase for phrase in PHRASES if phrase not in texts] == []


@pytest.mark.parametrize("mode", ["short", "long"])
def test_vision_examples_read_the_picture_not_a_caption(mode):
    """A pre-training example: the picture's tokens, the mode prompt and the question (no
    caption); only the completion is learned."""
    import random

    processor = build_processor(BaseModelConfig())
    tok = processor.tokenizer
    for family, gen in GENERATORS.items():
        puzzle = gen(random.Random(family))
        ids, labels, pixels = encode_vision_example(processor, puzzle, mode,
                                                    render_image(puzzle.items, 256, 72))
        assert ids.count(processor.image_token_id) == 16
        assert pixels["pixel_values"].shape == (1, 3, 64, 64)
        prompt = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab == -100])
        learned = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
        assert puzzle.question in prompt and puzzle.caption not in prompt
        assert prompt.index("<image>") < prompt.index(puzzle.question)
        assert learned.endswith(f"<answer>{puzzle.answer}</answer><|im_end|>")
        assert learned.startswith("<think>") == (mode == "long")
        # the processor's tokens are whole tokens, the phrases still too
        for token in ("<fake_token_around_image>", "<global-img>", "<image>"):
            assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1
        assert all(len(tok(phrase)["input_ids"]) == 1 for phrase in PHRASES)


@pytest.mark.parametrize("size", [(64, 64), (256, 72), (72, 96)])
def test_saved_processor_keeps_every_shape_where_it_was_drawn(tiny_model, size):
    """The whole picture is resized, never cropped or padded, whatever the layout: through the
    saved processor (AutoProcessor), each shape's colour (four distinct colours) lies where the
    shape was drawn, scaled to the processor's square (its centre within two pixels)."""
    import io

    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    mean = np.array(processor.image_processor.image_mean)[:, None, None]
    std = np.array(processor.image_processor.image_std)[:, None, None]
    for items in _distinct_colour_scenes("shapes", 6):
        image = Image.open(io.BytesIO(render_png("shapes", items, *size))).convert("RGB")
        drawn = np.asarray(image).astype(float).transpose(2, 0, 1)  # CHW, 0..255
        enc = processor(text=["<image>"], images=[[image]], return_tensors="np")
        assert enc["pixel_attention_mask"].all()
        seen = (enc["pixel_values"][0, 0] * std + mean) * 255
        side = seen.shape[1]
        for item in items:
            target = np.array(RGB[item["colour"]])[:, None, None]
            ys, xs = np.nonzero((np.abs(drawn - target) < 30).all(axis=0))
            ps, qs = np.nonzero((np.abs(seen - target) < 30).all(axis=0))
            assert len(ps) >= 2, (size, items, item)
            centre = (ys.mean() / image.height * side, xs.mean() / image.width * side)
            assert abs(ps.mean() - centre[0]) < 2 and abs(qs.mean() - centre[1]) < 2, (
                size, item, centre, (ps.mean(), qs.mean()))


def test_vision_pretraining_also_teaches_to_describe_the_picture():
    """With pictures, pre-training adds the describe task on every puzzle's scene and on as
    many fresh scenes, answered directly with every shape's colour and shape in reading order."""
    from dualcurate_synthetic.base_model import pretraining_examples, pretraining_puzzles
    from dualcurate_synthetic.families import DESCRIBE

    settings = BaseModelConfig(examples_per_family=2)
    processor = build_processor(settings)
    tok = processor.tokenizer
    puzzles = pretraining_puzzles(["colour-ops", "nth-colour"], 2, seed=0)
    examples = pretraining_examples(processor, settings, puzzles, seed=0)
    assert len(examples) == 2 * len(puzzles) + 2 * len(puzzles)
    describe = [e for e in examples if DESCRIBE in tok.decode(e[0])]
    assert len(describe) == 2 * len(puzzles)
    learned = [tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
               for ids, labels, _ in describe]
    for text, puzzle in zip(learned, puzzles, strict=False):
        names = ", ".join(f"{i['colour']} {i['shape']}" for i in puzzle.items)
        assert text == f"<answer>{names}</answer><|im_end|>"
    assert all(re.fullmatch(r"<answer>(\w+ \w+, ){3}\w+ \w+</answer><\|im_end\|>", t)
               for t in learned)
    text_only = pretraining_examples(build_tokenizer(), BaseModelConfig(vision=False), puzzles,
                                     seed=0)
    assert len(text_only) == 2 * len(puzzles)
