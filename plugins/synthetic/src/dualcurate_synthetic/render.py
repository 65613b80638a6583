"""Draw a puzzle's scene with Pillow: four slots left to right, cards with digits or shapes.
Deterministic: the same scene gives the same PNG bytes."""

from __future__ import annotations

import io
from typing import Any

RGB = {
    "red": (220, 50, 47),
    "green": (60, 160, 60),
    "blue": (38, 110, 210),
    "yellow": (230, 190, 20),
}


def render_png(kind: str, items: list[dict[str, Any]], width: int = 256,
               height: int = 72) -> bytes:
    """PNG bytes of the scene (``kind`` "cards" or "shapes")."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    slot = width / len(items)
    pad = max(2, int(min(slot, height) * 0.12))
    size = int(min(slot, height)) - 2 * pad
    try:
        font = ImageFont.load_default(size=max(10, int(size * 0.7)))
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    for pos, item in enumerate(items):
        cx = slot * pos + slot / 2
        cy = height / 2
        box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        colour = RGB[item["colour"]]
        if kind == "cards":
            draw.rounded_rectangle(box, radius=max(2, size // 8), fill=colour,
                                   outline=(40, 40, 40))
            draw.text((cx, cy), str(item["digit"]), fill=(255, 255, 255), font=font,
                      anchor="mm")
        elif kind == "shapes":
            _shape(draw, item["shape"], box, colour)
        else:
            raise ValueError(f"scene kind {kind!r}: expected 'cards' or 'shapes'")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _shape(draw: Any, shape: str, box: tuple[float, ...], colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    outline = (40, 40, 40)
    if shape == "circle":
        draw.ellipse(box, fill=colour, outline=outline)
    elif shape == "square":
        draw.rectangle(box, fill=colour, outline=outline)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour, outline=outline)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour, outline=outline)
    else:
        raise ValueError(f"shape {shape!r}: expected circle, square, triangle or diamond")
