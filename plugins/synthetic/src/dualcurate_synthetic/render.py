"""Draw a puzzle's scene with Pillow: four coloured shapes in reading order, in a 2 x 2 grid
when the picture is square-ish (the demo's 64 x 64: each shape 24 px wide, one 32 px cell per
2 x 2 image tokens of a patch-8 tower) or in a row when it is at least twice as wide as high.
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
BACKGROUND = (250, 250, 250)


def layout(n: int, width: int, height: int) -> tuple[int, int]:
    """(columns, rows) of the scene: one row when the picture is at least twice as wide as
    high (or holds fewer than four items), else a grid as square as ``n`` allows."""
    if width >= 2 * height or n < 4:
        return n, 1
    rows = int(n ** 0.5)
    while n % rows:
        rows -= 1
    return n // rows, rows


def render_png(kind: str, items: list[dict[str, Any]], width: int = 64,
               height: int = 64) -> bytes:
    """PNG bytes of the scene (``kind`` "shapes")."""
    from PIL import Image, ImageDraw

    if kind != "shapes":
        raise ValueError(f"scene kind {kind!r}: expected 'shapes'")
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cols, rows = layout(len(items), width, height)
    cell_w, cell_h = width / cols, height / rows
    pad = max(2, int(min(cell_w, cell_h) * 0.12))
    size = int(min(cell_w, cell_h)) - 2 * pad
    for pos, item in enumerate(items):
        cx = cell_w * (pos % cols) + cell_w / 2
        cy = cell_h * (pos // cols) + cell_h / 2
        box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        _shape(draw, item["shape"], box, RGB[item["colour"]])
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
