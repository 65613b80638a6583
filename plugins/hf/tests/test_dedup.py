"""Exact keys, SimHash + thumbnail near duplicates, and the embeddings index (fake encoders)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from dualcurate_hf.dedup import (
    DedupOptions,
    EmbeddingIndex,
    NearDuplicateIndex,
    exact_key,
    image_similarity,
    normalise_question,
    thumbnail,
)

text = st.text(min_size=1, max_size=80)


@given(text, st.lists(st.text(max_size=5), max_size=3))
def test_exact_key_ignores_case_and_spacing(question: str, images: list[str]) -> None:
    noisy = "  " + question.upper().replace(" ", "   ") + "\n"
    assert exact_key(question.lower(), [], images) == exact_key(noisy.lower(), [], images)
    assert exact_key(question, [], images) == exact_key(question, [], list(images))


@given(text)
def test_exact_key_distinguishes_images_and_choices(question: str) -> None:
    keys = {exact_key(question, [], []), exact_key(question, [], ["a" * 64]),
            exact_key(question, [], ["b" * 64]), exact_key(question, ["yes", "no"], [])}
    assert len(keys) == 4


@given(text)
def test_normalise_question_idempotent(question: str) -> None:
    assert normalise_question(normalise_question(question)) == normalise_question(question)


Q = ("In the figure, triangle ABC has AB = 5 and BC = 12 with a right angle at B. "
     "What is the length of AC?")
COLOURS = [(220, 20, 20), (20, 160, 20), (30, 60, 220), (240, 220, 20), (160, 30, 200),
           (250, 140, 0), (0, 200, 200), (90, 90, 90)]
SHAPES = ["square", "circle", "triangle", "bar", "ellipse", "cross"]


def drawing(shape: str, colour: tuple[int, int, int], x: int, y: int, r: int,
            background: tuple[int, int, int] = (255, 255, 255), size: int = 224) -> Image.Image:
    """A flat drawing: one filled shape on a plain background (as in STEM diagrams)."""
    image = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(image)
    if shape == "square":
        d.rectangle([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "circle":
        d.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "triangle":
        d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    elif shape == "bar":
        d.rectangle([x - r, y - r // 2, x + r, y + r // 2], fill=colour)
    elif shape == "ellipse":
        d.ellipse([x - r, y - r // 2, x + r, y + r // 2], fill=colour)
    else:
        d.rectangle([x - r, y - r // 4, x + r, y + r // 4], fill=colour)
        d.rectangle([x - r // 4, y - r, x + r // 4, y + r], fill=colour)
    return image


def _reopen(image: Image.Image, fmt: str = "PNG", quality: int = 90) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def near_copy(image: Image.Image, kind: str) -> Image.Image:
    """A true near-duplicate: re-encoded as JPEG, resized, or shifted by 3 pixels."""
    w, h = image.size
    if kind == "jpeg":
        return _reopen(image, "JPEG", 70)
    if kind == "resize":
        return _reopen(image.resize((int(w * 0.6), int(h * 0.6)), Image.Resampling.LANCZOS))
    shifted = Image.new("RGB", (w, h), image.getpixel((0, 0)))
    shifted.paste(image, (3, -2))
    return _reopen(shifted, "JPEG", 90)


def photo(seed: int, size: int = 224) -> Image.Image:
    """A photo-like image: smooth random colour fields at several scales plus grain."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((size, size, 3), np.float32)
    for scale in (4, 8, 16, 32):
        noise = rng.normal(size=(scale, scale, 3)).astype(np.float32)
        acc += np.stack([np.asarray(Image.fromarray(noise[:, :, k]).resize(
            (size, size), Image.Resampling.BICUBIC)) for k in range(3)], -1) * (64 / scale ** .5)
    acc += rng.normal(size=acc.shape) * 6
    return Image.fromarray(np.clip(acc + 128, 0, 255).astype(np.uint8))


def flat_corpus(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` distinct drawings: no two share shape, colour and (rounded) place and size."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < n:
        shape, colour = rng.choice(SHAPES), rng.choice(COLOURS)
        r = rng.randrange(24, 64, 8)
        x, y = rng.randrange(r, 224 - r, 16), rng.randrange(r, 224 - r, 16)
        if (shape, colour, x, y, r) not in seen:
            seen.add((shape, colour, x, y, r))
            out.append(drawing(shape, colour, x, y, r))
    return out


def _index(threshold: float | None = None) -> NearDuplicateIndex:
    options = DedupOptions(near=True) if threshold is None else DedupOptions(
        near=True, image_threshold=threshold)
    return NearDuplicateIndex(options)


def test_the_issue_case_green_square_and_yellow_circle_stay_apart() -> None:
    index = _index()
    square = drawing("square", (20, 160, 20), 112, 112, 40)
    circle = drawing("circle", (240, 220, 20), 112, 112, 40)
    q = "What shape is in the picture?"
    a = index.add_image("a" * 64, square)
    b = index.add_image("b" * 64, circle)
    assert index.check_and_add("r1", q, "square", [a]) is None
    assert index.check_and_add("r2", q, "circle", [b]) is None  # not even a conflict
    # same shape, other colour; same colour, other shape: different drawings
    c = index.add_image("c" * 64, drawing("square", (240, 220, 20), 112, 112, 40))
    d = index.add_image("d" * 64, drawing("circle", (20, 160, 20), 112, 112, 40))
    assert len({index.images._group[i] for i in (a, b, c, d)}) == 4


@pytest.mark.parametrize("kind", ["flat", "photo"])
def test_distinct_images_kept_near_copies_grouped(kind: str) -> None:
    index = _index()
    images = flat_corpus(120) if kind == "flat" else [photo(i) for i in range(40)]
    groups = [index.images.add(f"{i:064x}", im)[1] for i, im in enumerate(images)]
    assert len(set(groups)) == len(images), "distinct images merged"
    for i, image in enumerate(images[::4]):
        for j, variant in enumerate(("jpeg", "resize", "shift")):
            digest = f"{10_000 + i * 3 + j:064x}"
            assert index.images.add(digest, near_copy(image, variant))[1] == groups[i * 4], (
                f"{variant} copy of image {i * 4} not grouped with it")


def test_rows_near_duplicates_need_similar_text_and_the_same_answer() -> None:
    index = _index()
    base = drawing("triangle", (30, 60, 220), 100, 120, 48)
    i1 = index.add_image("1" * 64, base)
    i2 = index.add_image("2" * 64, near_copy(base, "jpeg"))
    other = index.add_image("3" * 64, drawing("triangle", (250, 140, 0), 100, 120, 48))
    assert index.check_and_add("aa", Q, "13", [i1]) is None
    # the same question on a re-encoded copy: dropped in favour of the first
    match = index.check_and_add("bb", Q.replace("AC?", "AC ?!"), "13", [i2])
    assert match is not None and match.kind == "near" and match.other == "aa"
    assert match.other_images == ["1" * 64]
    # same image, another gold answer: a conflict, kept and reported
    match = index.check_and_add("cc", Q, "12", [i2])
    assert match is not None and match.kind == "conflict" and match.other == "aa"
    # same text, a different drawing: not a duplicate (many datasets reuse one question)
    assert index.check_and_add("dd", Q, "13", [other]) is None
    # different text, same image: not a duplicate
    assert index.check_and_add("ee", "How many sides does the shape have?", "3", [i1]) is None
    # text-only rows compare by text alone, and never with rows that have images
    assert index.check_and_add("ff", Q, "13", []) is None
    match = index.check_and_add("ab", "  " + Q.upper(), "13", [])
    assert match is not None and match.other == "ff"


def test_image_similarity_bounds() -> None:
    a = thumbnail(drawing("square", (220, 20, 20), 112, 112, 40))
    assert image_similarity(a, a) == 1.0
    blank = thumbnail(Image.new("RGB", (224, 224), (255, 255, 255)))
    assert image_similarity(a, blank) < 0.9


def test_thresholds_tighten() -> None:
    strict = NearDuplicateIndex(DedupOptions(near=True, text_threshold=1.0))
    assert strict.check_and_add("aa", Q, "13", []) is None
    assert strict.check_and_add("bb", Q.replace("12", "13"), "13", []) is None


def test_embedding_index_with_fake_encoders() -> None:
    vocab = ["triangle", "circle", "area", "length", "red", "blue"]

    def encode_text(items: list[str]) -> np.ndarray:
        return np.array([[s.lower().count(w) + 0.01 for w in vocab] for s in items])

    def encode_image(items: list[bytes]) -> np.ndarray:
        return np.array([[1.0, 0.0] if len(b) % 2 else [0.0, 1.0] for b in items])

    index = EmbeddingIndex(DedupOptions(near=True, method="embeddings", text_threshold=0.95,
                                        image_threshold=0.99),
                           encode_text=encode_text, encode_image=encode_image)
    img = b"x" * 10
    assert index.check_and_add("a", "Area of the triangle?", [img], "6") is None
    match = index.check_and_add("b", "The triangle: area?", [img], "6")
    assert match is not None and (match.kind, match.other) == ("near", "a")
    match = index.check_and_add("b2", "The triangle: area?", [img], "7")
    assert match is not None and (match.kind, match.other) == ("conflict", "a")
    assert index.check_and_add("c", "Area of the triangle?", [b"y" * 11], "6") is None
    assert index.check_and_add("d", "Length of the blue circle?", [img], "6") is None
    assert index.check_and_add("e", "Area of the triangle?", [], "6") is None


def test_big_groups_use_the_hnsw_index_with_the_scans_answers(monkeypatch) -> None:
    """Past SCAN_LIMIT rows a group (here the text-only rows) is searched through an HNSW
    index over the SimHashes instead of a scan of the whole group: the same decisions."""
    import dualcurate_hf.dedup as dedup

    rng = random.Random(3)
    words = ["area", "angle", "side", "radius", "chord", "bar", "pie", "slice", "line"]
    rows = []
    for i in range(400):
        if i > 20 and rng.random() < 0.3:  # a near copy of an earlier row, same or other answer
            q, a = rows[rng.randrange(i)][1:]
            rows.append((f"r{i}", "  " + q.upper() + " ", a if rng.random() < 0.6 else a + "1"))
        else:
            picked = " ".join(rng.choice(words) for _ in range(8))
            rows.append((f"r{i}", f"Find the {picked} of figure {i}.", str(i % 7)))

    def decisions() -> tuple[list[tuple[str, str] | None], NearDuplicateIndex]:
        index = NearDuplicateIndex(DedupOptions(near=True))
        out = []
        for row_id, q, a in rows:
            m = index.check_and_add(row_id, q, a, [])
            out.append(None if m is None else (m.kind, m.other))
        return out, index

    scanned, plain = decisions()
    assert plain._groups[None].hnsw is None
    monkeypatch.setattr(dedup, "SCAN_LIMIT", 16)
    indexed, big = decisions()
    assert big._groups[None].hnsw is not None and len(big._groups[None].hnsw) > 300
    assert sum(d is not None and d[0] == "near" for d in scanned) > 50
    assert sum(d is not None and d[0] == "conflict" for d in scanned) > 20
    assert indexed == scanned
