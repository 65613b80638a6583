"""A chat request and what comes back: the value types every engine takes and returns.

Requests are OpenAI-style chat messages; an image is a content part
``{"type": "image", "image": "<sha256 of the bytes in the run's image store>"}``, so a request
is small, hashable and never carries re-encoded pixels. Engines resolve hashes to bytes through
the resolver (:data:`ImageResolver`) given at ``setup``, and turn each image part into their
own with :func:`map_image_parts`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dualcurate.fingerprint import canonical_json

ImageResolver = Callable[[str], bytes]
#: Base seeds lie below this, so base + sample index stays a valid 32-bit seed.
SEED_SPACE = 2**30
#: ``on_result(i, completions)`` once request ``i`` is answered. A callback with the attribute
#: ``accepts_partial = True`` (``generate_cached``'s) may instead be called as
#: ``on_result(i, completions, positions)`` with some of the request's samples as they arrive
#: (``positions`` index ``request.indices()``), so each is cached the moment it is in.
OnResult = Callable[..., None]


@dataclass
class ChatRequest:
    """One chat request for ``n`` samples; ``sample_indices`` says which samples they are."""

    messages: list[dict[str, Any]]
    n: int = 1
    sample_indices: list[int] | None = None
    request_id: str = ""
    _seed_bases: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    def indices(self) -> list[int]:
        return list(self.sample_indices) if self.sample_indices is not None else list(range(self.n))

    def seed_base(self, seed: int) -> int:
        """A base seed for this request's samples, from ``seed`` and the messages (images by
        hash): stable across runs, different for different questions. Below 2**30, so base
        plus sample index fits any server's 32-bit seed."""
        base = self._seed_bases.get(seed)
        if base is None:
            digest = hashlib.sha256(canonical_json([seed, self.messages]).encode()).digest()
            base = self._seed_bases[seed] = int.from_bytes(digest[:8], "little") % SEED_SPACE
        return base

    def image_hashes(self) -> list[str]:
        found = []
        for msg in self.messages:
            content = msg.get("content")
            if isinstance(content, list):
                found.extend(p["image"] for p in content if p.get("type") == "image")
        return found


@dataclass
class Completion:
    """One sampled completion, or a failure (``error`` set, nothing else meaningful)."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cached: bool = field(default=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_cache(self) -> dict[str, Any]:
        # not dataclasses.asdict: it deep-copies every field, on the path of every sample
        return {"text": self.text, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}


def map_image_parts(messages: Sequence[dict[str, Any]],
                    convert: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages with every ``{"type": "image", "image": hash}`` part replaced by
    ``convert(hash)`` (an engine's own image part); everything else is kept as is."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            msg = {**msg, "content": [convert(p["image"]) if p.get("type") == "image" else p
                                      for p in content]}
        out.append(msg)
    return out

