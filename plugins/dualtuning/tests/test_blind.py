"""Blind evaluation: the blank images, and the judge evaluating image groups with them (the
scripted engine reads every image through its resolver and needs them: blank, it answers
wrong)."""

from __future__ import annotations

import io
import json

import datasets
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from dualcurate import DualcurateError, rows_to_table
from dualcurate_dualtuning.blind import BLANK_GREY, BlankImages, blank_image, blank_messages
from dualcurate_dualtuning.judge import DualTuningJudge

SCRIPT = {"base": {"chart": {"S": 2, "L": 1}, "math": {"S": 4, "L": 4},
                   "plain": {"S": 2, "L": 2}},
          "trained": {"chart": {"S": 3, "L": 4}, "math": {"S": 4, "L": 4},
                      "plain": {"S": 3, "L": 2}}}
MODES = ["RGB", "L", "RGBA", "LA"]
G = BLANK_GREY
#: a blank's one pixel value per mode, as PIL's getcolors gives it
GREY = {"L": G, "LA": (G, 255), "RGB": (G, G, G), "RGBA": (G, G, G, 255)}


def picture(mode: str, size: tuple[int, int], fmt: str = "PNG") -> bytes:
    """A two-colour image (left half dark, right half light)."""
    image = Image.new("RGB", size, (200, 30, 40))
    image.paste((20, 60, 220), (0, 0, max(1, size[0] // 2), size[1]))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@settings(max_examples=40, deadline=None)
@given(mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "PA", "1", "I", "I;16", "CMYK",
                             "YCbCr"]),
       width=st.integers(1, 70), height=st.integers(1, 70),
       fmt=st.sampled_from(["PNG", "TIFF", "JPEG", "WEBP"]))
def test_the_blank_has_the_size_and_one_grey(mode, width, height, fmt):
    source = Image.new(mode, (width, height))
    buffer = io.BytesIO()
    try:
        source.save(buffer, fmt)
    except (OSError, ValueError, KeyError):
        assume(False)  # the format cannot hold that mode: no such input exists
    original = decode(buffer.getvalue())
    blank = decode(blank_image(buffer.getvalue()))
    assert blank.format == "PNG" and blank.size == original.size
    expected_mode = original.mode if original.mode in ("L", "LA", "RGB", "RGBA") else \
        "RGBA" if "A" in original.getbands() else "RGB"
    assert blank.mode == expected_mode
    pixels = blank.getcolors(maxcolors=4)
    assert pixels is not None and len(pixels) == 1
    value = pixels[0][1]
    value = value if isinstance(value, tuple) else (value,)
    assert value == tuple(255 if b == "A" else BLANK_GREY for b in blank.getbands())


def test_blanks_are_stored_once_and_replace_every_image_part(stage_context):
    store = stage_context.images
    a, b = store.put(picture("RGB", (10, 6))), store.put(picture("RGB", (10, 6), "JPEG"))
    c = store.put(picture("L", (3, 9)))
    blank = BlankImages(store)
    messages = [{"role": "system", "content": [{"type": "text", "text": "sys"}]},
                {"role": "user", "content": [{"type": "image", "image": a},
                                             {"type": "image", "image": c},
                                             {"type": "text", "text": "q"}]}]
    out = blank_messages(messages, blank)
    assert out[0] == messages[0] and out[1]["content"][2] == {"type": "text", "text": "q"}
    first, second = (p["image"] for p in out[1]["content"][:2])
    assert decode(store.get(first)).size == (10, 6) and decode(store.get(second)).size == (3, 9)
    assert blank(b) == first  # same size and mode: the same blank, stored once
    assert messages[1]["content"][0]["image"] == a  # the input is not changed


def test_an_unreadable_image_is_named(stage_context):
    digest = stage_context.images.put(b"not an image")
    with pytest.raises(DualcurateError, match=f"image {digest[:12]}.*blind = false"):
        BlankImages(stage_context.images)(digest)


def image_rows(make_rows, store) -> list[dict]:
    """``chart``: every row has an image (sizes and modes vary); ``math``: only its first two
    eval rows do; ``plain``: no images."""
    rows = make_rows({"chart": 8, "math": 8, "plain": 8})
    for row in rows:
        i = int(row["question"].split("#")[1].split("]")[0])
        if row["domain"] == "chart" or (row["domain"] == "math" and i < 2):
            row["images"] = [store.put(picture(MODES[i % 4], (16 + i, 8 + 3 * i)))]
    return rows


def judge(**overrides) -> DualTuningJudge:
    return DualTuningJudge({"base_model": "base-model",
                            "engine": {"use": "scripted", "script": SCRIPT},
                            "trainer": {"use": "recording"}, **overrides})


def test_image_groups_are_also_evaluated_blind(scripted, stage_context, make_rows):
    engine, _ = scripted
    rows = image_rows(make_rows, stage_context.images)
    result = judge().run(datasets.Dataset(rows_to_table(rows)), stage_context)
    groups = {g["group"]: g for g in result.report["groups"]}

    # the real images: the scripted accuracies, blind or not
    assert [groups["chart"][k] for k in ("B_S", "B_L", "DT_S", "DT_L")] == [50, 25, 75, 100]
    # blank images: the engine answers every pictured row wrong; math's two text-only eval
    # rows keep their verdicts (right), plain has no images and no blind evaluation
    assert groups["chart"]["blind"] == {"B_S": 0.0, "B_L": 0.0, "DT_S": 0.0, "DT_L": 0.0}
    assert groups["math"]["blind"] == {"B_S": 50.0, "B_L": 50.0, "DT_S": 50.0, "DT_L": 50.0}
    assert groups["math"]["DT_S"] == 100.0
    assert groups["plain"]["blind"] is None
    efficacy = json.loads((stage_context.workdir / "efficacy.json").read_text())
    assert efficacy["groups"] == result.report["groups"]
    assert efficacy["blind_evaluation"] == {
        "enabled": True, "blank_image": efficacy["blind_evaluation"]["blank_image"],
        "groups": ["chart", "math"], "skipped": {"plain": "no images in its eval rows"},
        "failed_requests": 0, "truncated": {"base": {"S": 0, "L": 0},
                                            "dual": {"S": 0, "L": 0}}}

    # what the engine received: each blind request is its real request with every image a
    # uniform grey of the original's size and mode, from the same engine session per model
    by_id = {r["id"]: r for r in rows}
    real = [c for c in engine.calls if c["images"] and len(c["images"][0]["colours"]) > 1]
    blind = [c for c in engine.calls if c["images"] and len(c["images"][0]["colours"]) == 1]
    assert len(real) == len(blind) == 2 * 2 * (4 + 2)  # 2 models x 2 modes x pictured rows
    for call in blind:
        seen = call["images"][0]
        assert seen["colours"] == [GREY[seen["mode"]]]
        text = [p for m in call["messages"] for p in m["content"] if p["type"] == "text"]
        twin = [c for c in real if c["model"] == call["model"] and c["long"] == call["long"]
                and [p for m in c["messages"] for p in m["content"] if p["type"] == "text"]
                == text]
        assert len(twin) == 1
        assert (seen["size"], seen["mode"]) == (twin[0]["images"][0]["size"],
                                                twin[0]["images"][0]["mode"])
    sizes = {tuple(c["images"][0]["size"]) for c in blind}
    originals = {decode(stage_context.images.get(by_id[r]["images"][0])).size
                 for r in by_id if by_id[r]["images"] and by_id[r]["split"] == "eval"}
    assert sizes == originals
    # the region is decided on the real images
    assert groups["chart"]["region"] == "reasoning-benefit"


def test_blind_false_runs_no_blind_evaluation(scripted, stage_context, make_rows):
    engine, _ = scripted
    rows = image_rows(make_rows, stage_context.images)
    off = judge(blind=False).run(datasets.Dataset(rows_to_table(rows)), stage_context)
    assert all(len(c["images"][0]["colours"]) > 1 for c in engine.calls if c["images"])
    assert len(engine.calls) == 2 * 2 * 12  # 2 models x 2 modes x eval rows
    assert all(g["blind"] is None for g in off.report["groups"])
    assert off.report["blind_evaluation"]["enabled"] is False
    assert off.report["blind_evaluation"]["groups"] == []
    assert set(off.report["blind_evaluation"]["skipped"].values()) == {"blind = false"}

    # turned on over the same run: the real answers come from the request cache, only the
    # blind requests reach the engine (the cache keeps them apart), the scores are unchanged
    engine.calls.clear()
    on = judge().run(datasets.Dataset(rows_to_table(rows)), stage_context)
    assert len(engine.calls) == 2 * 2 * 6
    assert all(len(c["images"][0]["colours"]) == 1 for c in engine.calls)
    strip = [{k: v for k, v in g.items() if k != "blind"} for g in on.report["groups"]]
    assert strip == [{k: v for k, v in g.items() if k != "blind"} for g in off.report["groups"]]


def test_blind_requests_that_fail_are_counted_apart(scripted, stage_context, make_rows):
    rows = image_rows(make_rows, stage_context.images)
    result = judge(engine={"use": "scripted", "script": SCRIPT, "fail_groups": ["chart"]}).run(
        datasets.Dataset(rows_to_table(rows)), stage_context)
    assert result.report["failed_requests"] == 2 * 2 * 4
    assert result.report["blind_evaluation"]["failed_requests"] == 2 * 2 * 4
    assert any("(blind)" in w and "failed" in w for w in result.report["warnings"])


def test_an_unreadable_image_fails_before_any_request(scripted, stage_context, make_rows):
    engine, _ = scripted
    rows = make_rows({"chart": 8})
    rows[0]["images"] = [stage_context.images.put(b"not an image")]
    with pytest.raises(DualcurateError, match="cannot be read as an image"):
        judge().run(datasets.Dataset(rows_to_table(rows)), stage_context)
    assert engine.calls == []
