"""The synthetic source and the reference distiller, through dualcurate's contract suites and
on their own behaviour."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualcurate.schema import Trace, row_meta, rows_to_table
from dualcurate.testing.contracts import DistillerContract, SourceContract
from dualcurate_synthetic import plugin
from dualcurate_synthetic.families import (
    COLOURS,
    FAMILIES,
    OPS,
    ORDINALS,
    SHAPES,
    colour_ops,
    last_shape,
    make_puzzles,
    nth_colour,
)
from dualcurate_synthetic.reference import ReferenceDistiller
from dualcurate_synthetic.render import RGB, layout, render_png
from dualcurate_synthetic.source import SyntheticSource

SMALL = {"train_per_family": 6, "eval_per_family": 3}


def read_all(ctx, **config):
    stage = SyntheticSource({**SMALL, **config})
    stage.setup(ctx)
    return [row for batch in stage.read(ctx) for row in batch]


class TestSyntheticSource(SourceContract):
    stage_cls = SyntheticSource
    plugin = plugin.synthetic
    config = SMALL


class TestReferenceDistiller(DistillerContract):
    stage_cls = ReferenceDistiller
    plugin = plugin.reference
    config = {"samples_per_question": 2}

    @pytest.fixture
    def rows(self, stage_context):
        return read_all(stage_context)[:8]

    def test_traces_are_four_phase_and_end_with_the_answer(self, rows, stage_context):
        out = self._process(rows, stage_context)
        for row in out:
            assert row["n_traces"] == 2
            for index, trace in enumerate(row["traces"]):
                Trace(**trace)  # exactly the Trace keys
                assert trace["engine"] == "reference" and trace["sample_index"] == index
                text = trace["text"]
                assert re.fullmatch(r"<think>.+</think>\n<answer>.+</answer>", text, re.S)
                assert text.endswith(f"<answer>{row['answer']}</answer>")
                for phase in ("Information:", "Plan:", "Steps:", "Check:"):
                    assert phase in trace["reasoning"]
        assert rows_to_table(out).num_rows == len(rows)

    def test_row_without_solution_gets_an_error_trace(self, stage_context):
        from dualcurate.testing.contracts import default_rows

        out = self._process(default_rows(2), stage_context)
        assert all(t["error"] and "meta['solution']" in t["error"]
                   for row in out for t in row["traces"])

    def test_splits_option_limits_distillation(self, rows, stage_context):
        stage = ReferenceDistiller({"splits": ["train"]})
        out = stage.process(rows, stage_context)
        assert {r["split"] for r in rows} == {"train", "eval"}
        for row in out:
            assert (row["n_traces"] == 1) == (row["split"] == "train")


def test_rows_have_split_domain_image_caption_and_solution(stage_context):
    rows = read_all(stage_context)
    assert len(rows) == len(FAMILIES) * 9
    for family in FAMILIES:
        mine = [r for r in rows if r["domain"] == family]
        assert sum(r["split"] == "train" for r in mine) == 6
        assert sum(r["split"] == "eval" for r in mine) == 3
    for row in rows:
        image = stage_context.images.open(row["images"][0])
        assert image.size == (64, 64)
        meta = row_meta(row)
        assert meta["split"] == row["split"] and meta["solution"]
        assert row["caption"] and row["question"].endswith("?")
        # the student reads the picture: no caption in the question
        assert row["caption"] not in row["question"]


def test_deterministic_by_seed_and_seed_matters(stage_context):
    a = [r["id"] for r in read_all(stage_context, seed=3)]
    b = [r["id"] for r in read_all(stage_context, seed=3)]
    c = [r["id"] for r in read_all(stage_context, seed=4)]
    assert a == b and a != c


def test_counts_per_family_override(stage_context):
    rows = read_all(stage_context, families=["colour-ops", "last-shape"],
                    counts={"last-shape": {"train": 2, "eval": 1}})
    assert sum(r["domain"] == "colour-ops" for r in rows) == 9
    assert sum(r["domain"] == "last-shape" for r in rows) == 3


def test_unknown_family_is_a_validation_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="choose from"):
        SyntheticSource({"families": ["sudoku"]})


def test_only_train_labels_of_the_noisy_family_are_corrupted():
    puzzles = make_puzzles("last-shape", 40, 40, seed=0)
    for split, p in puzzles:
        assert p.corrupted == (split == "train")
        assert (p.answer == p.true_answer) == (split == "eval")
    assert all(not p.corrupted for _, p in make_puzzles("colour-ops", 20, 5, seed=0))


def test_eval_scenes_never_appear_in_train():
    puzzles = make_puzzles("nth-colour", 300, 100, seed=1)
    train = {p.key() for s, p in puzzles if s == "train"}
    assert not train & {p.key() for s, p in puzzles if s == "eval"}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_puzzle_answers_follow_from_the_caption(seed):
    import random

    rng = random.Random(seed)
    p = colour_ops(rng)
    colours = [part.split()[0] for part in p.caption.split(": ", 1)[1].rstrip(".").split(", ")]
    # the question says what each colour does; the answer is the digit left after all four
    assert p.question.startswith("Start at 1. Red adds 1, green adds 3, blue triples, yellow")
    state = 1
    for colour in colours:
        op, operand = OPS[colour]
        state = (state + operand if op == "+" else state * operand) % 10
    assert p.answer == str(state)
    # the trace reads the colours in order, then one operation per step on the last digit
    assert p.info == "the shapes are " + ", ".join(colours) + "."
    steps = re.findall(r"(\d+)([+*])(\d)=(\d+)", p.steps)
    assert len(steps) == 4 and steps[0][0] == "1"
    for (a, op, b, c), colour in zip(steps, colours, strict=True):
        assert (op, int(b)) == OPS[colour]
        assert int(c) == (int(a) + int(b) if op == "+" else int(a) * int(b))
    assert [int(a) for a, *_ in steps[1:]] == [int(c) % 10 for *_, c in steps[:-1]]
    assert p.check == f"the result is {p.answer}."
    p = nth_colour(rng)
    ordinal = re.fullmatch(r"What colour is the (\w+) shape\?", p.question).group(1)
    items = p.caption.split(": ", 1)[1].rstrip(".").split(", ")
    assert p.answer == items[ORDINALS.index(ordinal)].split()[0] in COLOURS
    assert p.solution.rstrip(".").endswith(p.answer)
    p = last_shape(rng, corrupt=True)
    last = p.caption.rstrip(".").split(", ")[-1].split()
    assert p.true_answer == last[1] in SHAPES and p.answer != p.true_answer
    assert p.check == f"it is a {p.answer}."


def test_render_is_deterministic_and_draws_colours_in_reading_order():
    import io

    from PIL import Image

    items = [{"shape": s, "colour": c} for s, c in zip(SHAPES, COLOURS, strict=True)]
    png = render_png("shapes", items)
    assert png == render_png("shapes", items)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (64, 64)
    # a square picture: a 2 x 2 grid in reading order, each shape's centre in its colour
    for (x, y), colour in zip([(16, 16), (48, 16), (16, 48), (48, 48)], COLOURS, strict=True):
        assert image.getpixel((x, y)) == RGB[colour], (x, y, colour)
    # a wide one: a row, left to right
    wide = Image.open(io.BytesIO(render_png("shapes", items, 256, 72))).convert("RGB")
    for pos, colour in enumerate(COLOURS):
        assert wide.getpixel((32 + 64 * pos, 36)) == RGB[colour], (pos, colour)
    with pytest.raises(ValueError, match="scene kind"):
        render_png("sprites", items)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(16, 300), st.integers(16, 300))
def test_layout_holds_every_item_once(n, width, height):
    cols, rows = layout(n, width, height)
    assert cols * rows == n
    assert rows == 1 or (width < 2 * height and rows <= cols)


def test_registered_names(plugin_host, register_plugin):
    register_plugin(plugin.synthetic, name="synthetic")
    register_plugin(plugin.reference, name="reference")
    assert plugin_host.get("source", "synthetic") is SyntheticSource
    assert plugin_host.get("distiller", "reference") is ReferenceDistiller


def test_meta_is_json(stage_context):
    row = read_all(stage_context)[0]
    assert json.loads(row["meta"])["family_role"]


def test_text_student_engine_drops_image_parts():
    pytest.importorskip("dualcurate_hf")
    from dualcurate.chat import ChatRequest
    from dualcurate_synthetic.student import TextStudentEngine, without_images

    request = ChatRequest(messages=[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image", "image": "ab" * 32},
                                     {"type": "text", "text": "Four cards... What?"}]}],
        n=2, request_id="r1")
    out = without_images(request)
    assert out.messages[1]["content"] == [{"type": "text", "text": "Four cards... What?"}]
    assert out.messages[0] == request.messages[0]
    assert (out.n, out.request_id) == (2, "r1")
    assert request.image_hashes() and not out.image_hashes()
    assert TextStudentEngine.name == "hf-text"


def test_hf_text_engine_is_registered(plugin_host, register_plugin):
    pytest.importorskip("dualcurate_hf")
    from dualcurate_synthetic.student import TextStudentEngine

    register_plugin(plugin.synthetic, name="synthetic")
    assert plugin_host.get("engine", "hf-text") is TextStudentEngine
