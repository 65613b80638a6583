"""Blind evaluation: every image of a request replaced by a blank one of the same size.

The visual-dependency check: a group its models answer as well blind does not need its
images. The blank is drawn by :func:`blank_image`: the original's size, its mode when that is
``L``, ``LA``, ``RGB`` or ``RGBA`` (any other mode: ``RGBA`` when it has an alpha band, else
``RGB``), every pixel mid-grey (:data:`BLANK_GREY` in every colour band, alpha opaque), stored
as PNG.

The blanks go into the run's image store and the requests name them by hash, as they name any
image (:func:`blank_messages`), so every engine (hf, vllm, openai) reads them through its usual
resolver, and the request cache keeps blind answers apart from the real ones.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from dualcurate.chat import map_image_parts
from dualcurate.errors import DualcurateError

if TYPE_CHECKING:
    from dualcurate.store import ImageStore

#: the value of every colour band of a blank image (alpha is opaque)
BLANK_GREY = 128
#: the modes a blank keeps as they are (others become RGB, or RGBA with an alpha band)
KEPT_MODES = ("L", "LA", "RGB", "RGBA")
#: efficacy.json's words for the blank
BLANK_DESCRIPTION = (f"same size as the original, mid-grey ({BLANK_GREY} in every colour band, "
                     f"alpha opaque), PNG")


def blank_image(data: bytes) -> bytes:
    """A blank PNG of the size of the image ``data`` (see the module docstring)."""
    return _draw_blank(*_blank_shape(data))


def _blank_shape(data: bytes) -> tuple[str, tuple[int, int]]:
    """The mode and size of the blank for the image ``data`` (its header only is read)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        size, mode, bands = image.size, image.mode, image.getbands()
    if mode not in KEPT_MODES:
        mode = "RGBA" if "A" in bands else "RGB"
    return mode, size


def _draw_blank(mode: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    fill = tuple(255 if band == "A" else BLANK_GREY for band in Image.new(mode, (1, 1)).getbands())
    buffer = io.BytesIO()
    Image.new(mode, size, fill if len(fill) > 1 else fill[0]).save(buffer, "PNG")
    return buffer.getvalue()

class BlankImages:
    """The blank of each image of ``store``, put in the store once per original (by hash)."""

    def __init__(self, store: ImageStore | None):
        self.store = store
        self._blank: dict[str, str] = {}
        self._by_shape: dict[tuple[str, tuple[int, int]], str] = {}  # drawn and stored once

    def __call__(self, digest: str) -> str:
        """The hash of the blank for the image ``digest``."""
        blank = self._blank.get(digest)
        if blank is None:
            if self.store is None:
                raise DualcurateError("dual-tuning blind evaluation: the rows have images but "
                                      "the run has no image store; run the judge with a run "
                                      "context (StageContext.ephemeral or curate run)")
            data = self.store.get(digest)  # a missing image: the store's own error
            try:
                shape = _blank_shape(data)
            except Exception as exc:  # PIL: not an image it can read
                raise DualcurateError(
                    f"dual-tuning blind evaluation: image {digest[:12]}… of the image store "
                    f"cannot be read as an image ({exc}); rerun the source stage, or set "
                    f"blind = false") from exc
            if shape not in self._by_shape:
                self._by_shape[shape] = self.store.put(_draw_blank(*shape))
            blank = self._blank[digest] = self._by_shape[shape]
        return blank

def blank_messages(messages: list[dict[str, Any]], blank: BlankImages) -> list[dict[str, Any]]:
    """``messages`` with every image part naming the blank of its image instead."""
    return map_image_parts(messages, lambda digest: {"type": "image", "image": blank(digest)})
