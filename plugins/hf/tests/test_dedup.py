"""Exact keys, MinHash + image-hash near duplicates, and the embeddings index (fake encoders)."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from dualcurate_hf.dedup import (
    DedupOptions,
    EmbeddingIndex,
    MinHasher,
    NearDuplicateIndex,
    exact_key,
    jaccard_estimate,
    normalise_question,
    shingles,
)
from dualcurate_hf.images import dhash
from dualcurate_hf.sample_data import image_bytes

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


def test_minhash_estimates_jaccard() -> None:
    hasher = MinHasher(256)
    a = shingles("the quick brown fox jumps over the lazy dog near the river bank today", 3)
    b = shingles("the quick brown fox jumps over the lazy dog near the river bank now", 3)
    c = shingles("completely different words about a triangle and its area", 3)
    true_ab = len(a & b) / len(a | b)
    assert abs(jaccard_estimate(hasher.signature(a), hasher.signature(b)) - true_ab) < 0.15
    assert jaccard_estimate(hasher.signature(a), hasher.signature(c)) < 0.1
    assert np.array_equal(MinHasher(64).signature(a), MinHasher(64).signature(a))


def _dh(seed: int, touch: bool = False) -> int:
    image = Image.open(io.BytesIO(image_bytes(seed, size=(96, 64)))).convert("RGB")
    if touch:
        image.putpixel((1, 1), (0, 0, 0))
    return dhash(image)


Q = ("In the figure, triangle ABC has AB = 5 and BC = 12 with a right angle at B. "
     "What is the length of AC?")


def test_near_duplicates_need_similar_text_and_images() -> None:
    index = NearDuplicateIndex(DedupOptions(near=True, text_threshold=0.7))
    assert index.check_and_add("r1", Q, [_dh(1)]) is None
    # a trailing word changed and one pixel changed: a near duplicate of r1
    assert index.check_and_add("r2", Q.replace("AC?", "AC ?!"), [_dh(1, touch=True)]) == "r1"
    # same text, a different image: not a duplicate (many datasets reuse one question)
    assert index.check_and_add("r3", Q, [_dh(2)]) is None
    # different text, same image: not a duplicate
    assert index.check_and_add("r4", "How many sides does the shape have?", [_dh(1)]) is None
    # text-only rows compare by text alone, and never with rows that have images
    assert index.check_and_add("t1", Q, []) is None
    assert index.check_and_add("t2", Q + " Explain.", []) == "t1"


def test_thresholds_tighten() -> None:
    strict = NearDuplicateIndex(DedupOptions(near=True, text_threshold=1.0))
    assert strict.check_and_add("a", Q, []) is None
    assert strict.check_and_add("b", Q.replace("12", "13"), []) is None


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
    assert index.check_and_add("a", "Area of the triangle?", [img]) is None
    assert index.check_and_add("b", "The triangle: area?", [img]) == "a"
    assert index.check_and_add("c", "Area of the triangle?", [b"y" * 11]) is None
    assert index.check_and_add("d", "Length of the blue circle?", [img]) is None
    assert index.check_and_add("e", "Area of the triangle?", []) is None
