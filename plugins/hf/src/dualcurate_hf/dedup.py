"""Deduplication across all sources of one hf-dataset stage, first occurrence wins.

* exact (default): the normalised question (NFKC, case-folded, whitespace collapsed), the
  choices and the image hashes.
* near (optional), offline by default: MinHash over word shingles of the question (LSH bands to
  find candidates) and a 64-bit difference hash of each image; two rows are near-duplicates when
  their estimated Jaccard similarity is >= ``text_threshold`` and every image pair is
  >= ``image_threshold`` similar (1 - differing bits / 64). ``method = "embeddings"`` uses
  cosine similarity of sentence-transformers embeddings instead (a model name; for users'
  machines with the model available).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

_WS = re.compile(r"\s+")
_MERSENNE = np.uint64((1 << 61) - 1)


class DedupOptions(BaseModel):
    """``[source.dedup]``: exact and near-duplicate removal."""

    model_config = ConfigDict(extra="forbid")

    exact: bool = True
    near: bool = False
    method: Literal["minhash", "embeddings"] = "minhash"
    text_threshold: float = Field(0.85, gt=0, le=1)
    image_threshold: float = Field(0.95, gt=0, le=1)
    num_perm: int = Field(64, ge=8, le=512)
    shingle: int = Field(3, ge=1, le=10)
    max_bucket: int = Field(1000, ge=1)
    text_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    image_model: str = "sentence-transformers/clip-ViT-B-32"


def normalise_question(text: str) -> str:
    """The question as compared for exact duplicates."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def exact_key(question: str, choices: Sequence[str], images: Sequence[str]) -> bytes:
    """Key of an exact duplicate: normalised question, choices and image digests."""
    h = hashlib.sha256(normalise_question(question).encode())
    for part in (*(normalise_question(c) for c in choices), "\x1e", *images):
        h.update(b"\x1f" + part.encode())
    return h.digest()


def shingles(text: str, size: int) -> set[str]:
    """Word ``size``-grams of the normalised text (the whole text if it is shorter)."""
    words = re.findall(r"\w+", normalise_question(text))
    if len(words) <= size:
        return {" ".join(words)}
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


class MinHasher:
    """MinHash signatures with ``num_perm`` universal hash permutations (seeded, stable)."""

    def __init__(self, num_perm: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 1 << 32, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64)

    def signature(self, items: set[str]) -> np.ndarray:
        hashes = np.fromiter(
            (int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")
             for s in sorted(items)), dtype=np.uint64, count=len(items))
        perms = (hashes[:, None] * self.a[None, :] + self.b[None, :]) % _MERSENNE
        return perms.min(axis=0)


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def image_similarity(a: int, b: int) -> float:
    return 1.0 - (a ^ b).bit_count() / 64


class _Entry:
    __slots__ = ("dhashes", "id", "signature")

    def __init__(self, row_id: str, signature: Any, dhashes: tuple[int, ...]):
        self.id = row_id
        self.signature = signature
        self.dhashes = dhashes


class NearDuplicateIndex:
    """MinHash-LSH over question text plus difference hashes of images."""

    def __init__(self, options: DedupOptions):
        self.options = options
        self.hasher = MinHasher(options.num_perm)
        self.rows_per_band = 4 if options.num_perm % 4 == 0 else 2
        self.bands = options.num_perm // self.rows_per_band
        self.max_hamming = int((1.0 - options.image_threshold) * 64 + 1e-9)
        self.chunks = min(self.max_hamming + 1, 16)
        self._buckets: dict[tuple[Any, ...], list[_Entry]] = {}

    def _text_keys(self, sig: np.ndarray) -> list[tuple[Any, ...]]:
        r = self.rows_per_band
        return [("t", band, sig[band * r:(band + 1) * r].tobytes()) for band in range(self.bands)]

    def _image_keys(self, first: int) -> list[tuple[Any, ...]]:
        bits = 64 // self.chunks
        keys = []
        for i in range(self.chunks):
            width = bits if i < self.chunks - 1 else 64 - bits * (self.chunks - 1)
            keys.append(("i", i, (first >> (bits * i)) & ((1 << width) - 1)))
        return keys

    def check_and_add(self, row_id: str, question: str, dhashes: Sequence[int | None]
                      ) -> str | None:
        """The id of an earlier near-duplicate, or None (then the row is indexed)."""
        sig = self.hasher.signature(shingles(question, self.options.shingle))
        hashes = tuple(h for h in dhashes if h is not None)
        keys = self._image_keys(hashes[0]) if hashes else self._text_keys(sig)
        seen: set[int] = set()
        for key in keys:
            for entry in self._buckets.get(key, ()):
                if id(entry) in seen:
                    continue
                seen.add(id(entry))
                if self._similar(entry, sig, hashes):
                    return entry.id
        entry = _Entry(row_id, sig, hashes)
        for key in keys:
            bucket = self._buckets.setdefault(key, [])
            if len(bucket) < self.options.max_bucket:
                bucket.append(entry)
        return None

    def _similar(self, entry: _Entry, sig: np.ndarray, hashes: tuple[int, ...]) -> bool:
        if len(entry.dhashes) != len(hashes):
            return False
        if any(image_similarity(a, b) < self.options.image_threshold
               for a, b in zip(entry.dhashes, hashes, strict=True)):
            return False
        return jaccard_estimate(entry.signature, sig) >= self.options.text_threshold


Encoder = Callable[[list[Any]], np.ndarray]


class EmbeddingIndex:
    """Cosine similarity of embeddings (text, and images when both rows have them). Compares
    each row with every kept row: meant for up to a few hundred thousand rows."""

    def __init__(self, options: DedupOptions, encode_text: Encoder | None = None,
                 encode_image: Encoder | None = None):
        self.options = options
        self.encode_text = encode_text or _sentence_transformer(options.text_model)
        self.encode_image = encode_image or _sentence_transformer(options.image_model,
                                                                  images=True)
        self._text: list[np.ndarray] = []
        self._image: list[np.ndarray | None] = []
        self._ids: list[str] = []

    def check_and_add(self, row_id: str, question: str, image_bytes: Sequence[bytes]
                      ) -> str | None:
        text = _unit(self.encode_text([question])[0])
        image = _unit(self.encode_image(list(image_bytes)).mean(axis=0)) if image_bytes else None
        if self._text:
            sims = np.stack(self._text) @ text
            for i in np.nonzero(sims >= self.options.text_threshold)[0]:
                other = self._image[i]
                if (other is None) != (image is None):
                    continue
                if other is None or float(other @ image) >= self.options.image_threshold:
                    return self._ids[i]
        self._text.append(text)
        self._image.append(image)
        self._ids.append(row_id)
        return None


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _sentence_transformer(model_name: str, images: bool = False) -> Encoder:
    """A lazily loaded sentence-transformers model as an encoder."""
    state: dict[str, Any] = {}

    def encode(items: list[Any]) -> np.ndarray:
        if "model" not in state:
            from sentence_transformers import SentenceTransformer

            state["model"] = SentenceTransformer(model_name)
        if images:
            import io

            from PIL import Image

            items = [Image.open(io.BytesIO(b)).convert("RGB") for b in items]
        return np.asarray(state["model"].encode(items))

    return encode
