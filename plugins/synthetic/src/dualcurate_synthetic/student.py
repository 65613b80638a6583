"""``hf-text``: the hf engine for a text-only student that reads pictures through captions.

The demo's student is a tiny text model; the synthetic source can put each picture's dense
caption into the question (``caption_in_question``), so the images are not needed to answer.
Requests still carry their image parts (stages build prompts from canonical rows, images
included), and the hf engine rightly refuses images for a text-only model; this engine drops the
image parts before generating. Everything else is the hf engine's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from dualcurate.chat import ChatRequest, Completion
from dualcurate.sampling import SamplingParams
from dualcurate_hf.engine import HFEngine


def without_images(request: ChatRequest) -> ChatRequest:
    """The request with every image part removed from its messages."""
    messages = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [p for p in content if p.get("type") != "image"]
        messages.append({**message, "content": content})
    return dataclasses.replace(request, messages=messages)


class TextStudentEngine(HFEngine):
    """The hf engine with image parts dropped: for a text-only model reading captions."""

    name = "hf-text"

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams,
                 on_result: Any = None) -> list[list[Completion]]:
        return super().generate([without_images(r) for r in requests], sampling, on_result)
