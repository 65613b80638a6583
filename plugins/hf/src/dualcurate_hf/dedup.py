"""Deduplication across all sources of one hf-dataset stage, first occurrence wins.

* exact (default): the normalised question (NFKC, case-folded, whitespace collapsed), the
  choices and the image hashes.
* near (optional), offline by default (``method = "simhash"``):

  - images: a 32x32 RGB thumbnail per distinct stored image, compared pixel by pixel with a
    one-pixel shift tolerance (each pixel is matched to its best neighbour in the other
    thumbnail, in both directions); two images are near-identical when at most
    ``1 - image_threshold`` of the pixels differ by more than a quarter of the range in some
    channel. Colour and shape both count, so flat drawings (a green square, a yellow circle)
    stay apart, which the grey 64-bit difference hash used before could not do. Candidates
    come from a usearch HNSW index over 8x8 thumbnails; thumbnails wait in a temporary file,
    not in memory. Near-identical images share a *group* id.
  - text: a 64-bit SimHash of the question's word shingles; two texts are similar when their
    estimated cosine similarity (cos(pi * differing bits / 64)) is >= ``text_threshold``.
  - rows are near-duplicates when their images are in the same groups and their texts are
    similar; a pair whose gold answers differ is a *conflict*: both rows are kept and the
    pair is reported.

  Memory per row is 32 bytes (SimHash, answer hash, chain link, first image); per distinct
  image about 0.5 KB (the HNSW entry). ``method = "embeddings"`` uses cosine similarity of
  sentence-transformers embeddings instead (a model name; for users' machines with the model).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import unicodedata
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

_WS = re.compile(r"\s+")


class DedupOptions(BaseModel):
    """``[source.dedup]``: exact and near-duplicate removal."""

    model_config = ConfigDict(extra="forbid")

    exact: bool = True
    near: bool = False
    method: Literal["simhash", "embeddings"] = "simhash"
    text_threshold: float = Field(0.9, gt=0, le=1)
    image_threshold: float = Field(0.98, gt=0, le=1)
    shingle: int = Field(3, ge=1, le=10)
    #: Nearest images (8x8 thumbnails) checked per new image before the exact comparison.
    candidates: int = Field(16, ge=1, le=256)
    text_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    image_model: str = "sentence-transformers/clip-ViT-B-32"
    #: A conflict (the same question, exactly or nearly, with another gold answer): "keep"
    #: both rows and report the pair, or "drop" every row of it (the source then reads its
    #: data twice: the first pass finds the conflicts, the second drops them).
    conflicts: Literal["keep", "drop"] = "keep"


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


THUMB = 64
COARSE = 8
PIXEL_TOLERANCE = 0.25
#: 8x8 candidates farther than this RMS difference (0..1) are not compared at 32x32: measured
#: near-duplicates (re-encoding, resizing, 3-pixel shifts) stay below 0.06.
COARSE_RADIUS = 0.12


def thumbnail(image: Any, size: int = THUMB) -> np.ndarray:
    """A ``size`` x ``size`` RGB thumbnail (area average) as uint8 (size, size, 3)."""
    from PIL import Image

    return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BOX),
                      dtype=np.uint8)


def image_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """1 - the fraction of thumbnail pixels that differ by more than a quarter of the range in
    some channel, each pixel matched to its best neighbour (one pixel either way) in the
    other thumbnail, in both directions: re-encoding, resizing and small shifts score ~1, a
    different shape or colour loses the pixels it covers."""
    fa, fb = a.astype(np.float32) / 255, b.astype(np.float32) / 255

    def one_way(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        n, m = x.shape[:2]
        padded = np.pad(y, ((1, 1), (1, 1), (0, 0)), mode="edge")
        best = np.full((n, m), np.inf, dtype=np.float32)
        for dy in range(3):
            for dx in range(3):
                diff = np.abs(x - padded[dy:dy + n, dx:dx + m]).max(axis=-1)
                np.minimum(best, diff, out=best)
        return best

    differ = np.maximum(one_way(fa, fb), one_way(fb, fa)) > PIXEL_TOLERANCE
    return 1.0 - float(differ.mean())


class ImageIndex:
    """Distinct images, grouped by near-identity (see the module docstring). ``add`` returns
    ``(image index, group id)``; equal digests are one image."""

    def __init__(self, threshold: float, candidates: int = 16):
        from usearch.index import Index

        self.threshold = threshold
        self.candidates = candidates
        self._hnsw = Index(ndim=COARSE * COARSE * 3, metric="l2sq", dtype="f16")
        self._thumbs = tempfile.TemporaryFile(prefix="dualcurate-thumbs-", buffering=0)
        self._by_digest: dict[bytes, int] = {}
        self._group = array("i")
        self._digests = bytearray()
        self.comparisons = 0

    def __len__(self) -> int:
        return len(self._group)

    def digest(self, index: int) -> str:
        return bytes(self._digests[index * 32:(index + 1) * 32]).hex()

    def _thumb(self, index: int) -> np.ndarray:
        size = THUMB * THUMB * 3
        data = os.pread(self._thumbs.fileno(), size, index * size)
        return np.frombuffer(data, dtype=np.uint8).reshape(THUMB, THUMB, 3)

    def add(self, digest: str, image: Any) -> tuple[int, int]:
        key = bytes.fromhex(digest)
        known = self._by_digest.get(key)
        if known is not None:
            return known, self._group[known]
        thumb = thumbnail(image)
        coarse = thumbnail(image, COARSE).reshape(-1).astype(np.float32) / 255
        group = len(self._group)
        if len(self._group):
            found = self._hnsw.search(coarse, min(self.candidates, len(self._group)))
            radius = COARSE_RADIUS ** 2 * coarse.size
            for other, dist in zip(found.keys, found.distances, strict=True):
                if dist > radius:
                    break
                self.comparisons += 1
                if image_similarity(thumb, self._thumb(int(other))) >= self.threshold:
                    group = self._group[int(other)]
                    break
        index = len(self._group)
        os.pwrite(self._thumbs.fileno(), thumb.tobytes(), index * thumb.nbytes)
        self._hnsw.add(index, coarse)
        self._group.append(group)
        self._digests += key
        self._by_digest[key] = index
        return index, group

    def close(self) -> None:
        self._thumbs.close()


def simhash(text: str, size: int) -> int:
    """64-bit SimHash of the text's word shingles (signed int64 range)."""
    items = shingles(text, size)
    hashes = np.fromiter(
        (int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
         for s in items), dtype=np.uint64, count=len(items))
    bits = (hashes[:, None] >> np.arange(64, dtype=np.uint64)[None, :]) & np.uint64(1)
    votes = bits.astype(np.int32).sum(axis=0) * 2 - len(items)
    value = int(np.packbits((votes > 0)[::-1].astype(np.uint8)).view(">u8")[0])
    return value - (1 << 64) if value >= 1 << 63 else value


def answer_key(answer: str) -> int:
    """64-bit key of a normalised gold answer (signed int64 range)."""
    return int.from_bytes(hashlib.blake2b(normalise_question(answer).encode(),
                                          digest_size=8).digest(), "little", signed=True)


class _Column:
    """A growable int64 numpy column."""

    __slots__ = ("data", "n")

    def __init__(self, capacity: int = 1024):
        self.data = np.zeros(capacity, dtype=np.int64)
        self.n = 0

    def append(self, value: int) -> int:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.zeros(len(self.data), dtype=np.int64)])
        self.data[self.n] = value
        self.n += 1
        return self.n - 1

    def view(self) -> np.ndarray:
        return self.data[:self.n]


#: A group of rows (sharing their image groups, or all text-only rows) larger than this is
#: searched through a usearch HNSW index over its SimHashes (Hamming distance) instead of one
#: numpy scan of the whole group per row, which made a big group quadratic (measured over
#: 200k text-only rows: 6,000 rows/s for the first 20k, 380 for the last 20k). Below it the
#: scan is exact and cheaper than an HNSW lookup. Exact multi-index hashing (bands of the
#: 64 bits) was measured too: templated questions share most SimHash bits, so a quarter of
#: the rows were candidates.
SCAN_LIMIT = 50_000
#: Nearest SimHashes fetched from a big group's index per row, kept when within
#: ``max_bits``. With usearch's default graph (connectivity 16, expansion 64) 99.6 % of the
#: rows that had a close earlier row found one, on 20k templated questions.
TEXT_CANDIDATES = 32


def _hash_bytes(values: np.ndarray) -> np.ndarray:
    """int64 SimHashes as the (n, 8) uint8 rows usearch's ``b1x8`` vectors are."""
    return np.ascontiguousarray(values, dtype=np.int64).view(np.uint8).reshape(-1, 8)


class _Members:
    """The rows (slots) of one group; past :data:`SCAN_LIMIT` also an HNSW index over their
    SimHashes, so a lookup costs O(log n) instead of O(n)."""

    __slots__ = ("hnsw", "slots")

    def __init__(self) -> None:
        self.slots = _Column(4)
        self.hnsw: Any = None

    def close_slots(self, hashes: np.ndarray, text: int, max_bits: int) -> np.ndarray:
        """Slots whose SimHash is within ``max_bits`` of ``text``, in insertion order."""
        if self.hnsw is None:
            slots = self.slots.view()
            return slots[np.bitwise_count(hashes[slots] ^ np.int64(text)) <= max_bits]
        found = self.hnsw.search(_hash_bytes(np.array([text]))[0], TEXT_CANDIDATES, threads=1)
        keys = np.asarray(found.keys, dtype=np.int64)[np.asarray(found.distances) <= max_bits]
        return np.sort(keys)

    def add(self, slot: int, hashes: np.ndarray) -> None:
        self.slots.append(slot)
        if self.hnsw is not None:
            self.hnsw.add(slot, _hash_bytes(hashes[slot:slot + 1])[0], threads=1)
        elif self.slots.n > SCAN_LIMIT:
            from usearch.index import Index

            self.hnsw = Index(ndim=64, metric="hamming", dtype="b1x8", connectivity=16,
                              expansion_add=64, expansion_search=64)
            slots = self.slots.view()
            self.hnsw.add(slots, _hash_bytes(hashes[slots]), threads=1)


@dataclass
class NearMatch:
    """What the index found for a row: ``kind`` is ``"near"`` (drop it, ``other`` kept in its
    place) or ``"conflict"`` (a near-duplicate with another gold answer: both kept)."""

    kind: str
    other: str
    other_images: list[str]


class NearDuplicateIndex:
    """Near-duplicate rows: image groups (:class:`ImageIndex`) plus SimHash of the text; a
    pair with different gold answers is a conflict, never a drop. Rows are indexed by their
    image groups; within a group (and among text-only rows) the SimHashes are compared as
    one numpy operation, or through an HNSW index once the group is larger than
    :data:`SCAN_LIMIT`."""

    def __init__(self, options: DedupOptions):
        self.options = options
        self.images = ImageIndex(options.image_threshold, options.candidates)
        theta = math.acos(max(min(options.text_threshold, 1.0), -1.0))
        self.max_bits = int(theta / math.pi * 64 + 1e-9)
        self._hash = _Column()
        self._answer = _Column()
        self._first_image = _Column()
        self._ids: list[bytes] = []
        self._groups: dict[Any, _Members] = {}

    def add_image(self, digest: str, image: Any) -> int:
        """Register a stored image (``image``: a PIL image); returns its image index."""
        return self.images.add(digest, image)[0]

    def check_and_add(self, row_id: str, question: str, answer: str,
                      image_indices: Sequence[int]) -> NearMatch | None:
        """A near-duplicate or conflict found among earlier rows, or None. Rows that are not
        dropped (None or a conflict) are indexed."""
        group_key: Any = tuple(self.images._group[i] for i in image_indices) or None
        text = simhash(question, self.options.shingle)
        ans = answer_key(answer)
        members = self._groups.get(group_key)
        conflict: NearMatch | None = None
        if members is not None and members.slots.n:
            for slot in members.close_slots(self._hash.view(), text, self.max_bits):
                other = self._ids[int(slot)]
                first = int(self._first_image.data[int(slot)])
                images = [self.images.digest(first)] if first >= 0 else []
                if int(self._answer.data[int(slot)]) == ans:
                    return NearMatch("near", other.decode(), images)
                if conflict is None:
                    conflict = NearMatch("conflict", other.decode(), images)
        slot = self._hash.append(text)
        self._answer.append(ans)
        self._first_image.append(image_indices[0] if image_indices else -1)
        self._ids.append(row_id.encode())
        if members is None:
            members = self._groups[group_key] = _Members()
        members.add(slot, self._hash.view())
        return conflict

    def close(self) -> None:
        self.images.close()


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
        self._answers: list[int] = []

    def check_and_add(self, row_id: str, question: str, image_bytes: Sequence[bytes],
                      answer: str = "") -> NearMatch | None:
        """As :meth:`NearDuplicateIndex.check_and_add`: a near duplicate with the same gold
        answer (drop), one with another answer (a conflict, kept), or None."""
        text = _unit(self.encode_text([question])[0])
        image = _unit(self.encode_image(list(image_bytes)).mean(axis=0)) if image_bytes else None
        ans = answer_key(answer)
        conflict: NearMatch | None = None
        if self._text:
            sims = np.stack(self._text) @ text
            for i in np.nonzero(sims >= self.options.text_threshold)[0]:
                other = self._image[i]
                if (other is None) != (image is None):
                    continue
                if other is None or float(other @ image) >= self.options.image_threshold:
                    if self._answers[i] == ans:
                        return NearMatch("near", self._ids[i], [])
                    conflict = conflict or NearMatch("conflict", self._ids[i], [])
        self._text.append(text)
        self._image.append(image)
        self._ids.append(row_id)
        self._answers.append(ans)
        return conflict

    def close(self) -> None:
        pass


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
