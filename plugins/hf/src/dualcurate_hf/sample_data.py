"""Small datasets written on the fly in every format the hf-dataset source reads (Parquet, JSON
Lines, CSV, ``save_to_disk``, image folder), plus deliberately broken images. Used by the tests,
the throughput benchmark and the docs' examples; handy for trying a recipe without a download.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

FORMATS = ("parquet", "jsonl", "csv", "load_from_disk", "image_folder")


def image_bytes(seed: int, size: tuple[int, int] = (48, 32), fmt: str = "PNG",
                mode: str = "RGB") -> bytes:
    """A small distinct image: a background colour and a few rectangles drawn from ``seed``
    (structure, so perceptual hashes of different seeds differ)."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(6):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(2, w // 2 + 3), y0 + rng.randrange(2, h // 2 + 3)
        draw.rectangle([x0, y0, x1, y1], fill=tuple(rng.randrange(256) for _ in range(3)))
    if mode != "RGB":
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def bomb_png(width: int = 20_000, height: int = 10_000) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels (200 million by default) but holds only
    a few bytes of pixel data: decoding it would need gigabytes, its header says so."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def truncated_jpeg(seed: int = 0) -> bytes:
    """A JPEG cut in half: the header is valid, the pixel data ends early."""
    data = image_bytes(seed, size=(256, 192), fmt="JPEG")
    return data[: len(data) // 2]


NOT_AN_IMAGE = b"%PDF-1.4 this is not an image at all\n"


def write_dataset(root: Path, fmt: str, records: list[dict[str, Any]],
                  image_column: str = "image") -> Path:
    """Write ``records`` (image values as bytes, a list of bytes, or None) in ``fmt``; return
    the path to give the source. Parquet and save_to_disk keep bytes inline; JSON Lines, CSV
    and image folders write image files and store relative paths (a list as JSON for CSV)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = root / "data.parquet"
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=64)
        return path
    if fmt == "load_from_disk":
        import datasets

        path = root / "dataset"
        datasets.Dataset.from_list(records).save_to_disk(str(path))
        return path
    rows = [_with_image_files(root, i, r, image_column, fmt) for i, r in enumerate(records)]
    if fmt in ("jsonl", "image_folder"):
        name = "metadata.jsonl" if fmt == "image_folder" else "data.jsonl"
        path = root / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return root if fmt == "image_folder" else path
    if fmt == "csv":
        import csv

        path = root / "data.csv"
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, list) else v
                                 for k, v in r.items()})
        return path
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _with_image_files(root: Path, index: int, record: dict[str, Any], column: str,
                      fmt: str) -> dict[str, Any]:
    out = dict(record)
    value = out.pop(column, None)
    target = "file_name" if fmt == "image_folder" else column
    if value is None:
        if column in record:
            out[target] = None
        return out
    values = value if isinstance(value, list) else [value]
    names = []
    for j, data in enumerate(values):
        name = f"images/{index:05d}-{j}.img"
        (root / "images").mkdir(exist_ok=True)
        (root / name).write_bytes(data)
        names.append(name)
    out[target] = names if isinstance(value, list) else names[0]
    return out
