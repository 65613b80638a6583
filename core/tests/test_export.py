"""`curate export --images copy|link|embed|none`: exports carry their images."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from dualcurate.errors import DualcurateError
from dualcurate.export import copy_images, export_stage, image_extension
from dualcurate.store import RunStore


def _png(colour: str, size: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), colour).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A run with a ``source`` stage: 2 shards, rows with 2 / 1 / 0 images, one dropped, and
    a column only the second shard has (later stages add columns shard by shard)."""
    store = RunStore(tmp_path / "run")
    blobs = {"red": _png("red"), "green": _png("green"), "blue": _jpeg("blue")}
    h = {name: store.images.put(data) for name, data in blobs.items()}
    store.write_shard("source", 0, [
        {"id": "a", "question": "two images", "answer": "1", "images": [h["red"], h["blue"]],
         "keep": True},
        {"id": "b", "question": "text only", "answer": "2", "images": [], "keep": True},
        {"id": "c", "question": "dropped", "answer": "3", "images": [h["green"]], "keep": False},
    ])
    store.write_shard("source", 1, [
        {"id": "d", "question": "shares red", "answer": "4", "images": [h["red"]], "keep": True,
         "extra": 7},
    ])
    store.stage_record("source")["status"] = "done"
    store.save_manifest()
    return store.root, {h[name]: data for name, data in blobs.items()}


def _jsonl(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "source.jsonl").read_text().splitlines()]


def test_jsonl_default_copies_files_with_relative_paths(run, tmp_path):
    root, blobs = run
    n = export_stage(root, "source", tmp_path / "out", "jsonl")
    assert n == 3
    # the export alone, moved elsewhere and without the run, still has every picture
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "out", moved)
    shutil.rmtree(root)
    rows = {r["id"]: r for r in _jsonl(moved)}
    assert set(rows) == {"a", "b", "d"}
    for row in rows.values():
        assert len(row["images"]) == len(row["image_sha256"])
        for rel, digest in zip(row["images"], row["image_sha256"], strict=True):
            assert not os.path.isabs(rel) and rel.startswith("images/")
            path = moved / rel
            assert not path.is_symlink() and path.read_bytes() == blobs[digest]
    assert rows["a"]["images"][0].endswith(".png") and rows["a"]["images"][1].endswith(".jpg")
    assert rows["b"]["images"] == []
    assert rows["d"]["images"] == rows["a"]["images"][:1]  # one file for a shared image
    assert len(list((moved / "images").rglob("*.*"))) == 2  # the dropped row's image is not


def test_all_rows_carries_the_dropped_rows_images(run, tmp_path):
    root, blobs = run
    export_stage(root, "source", tmp_path / "out", "jsonl", all_rows=True)
    rows = {r["id"]: r for r in _jsonl(tmp_path / "out")}
    assert (tmp_path / "out" / rows["c"]["images"][0]).read_bytes() in blobs.values()


def test_link_shares_the_stored_file(run, tmp_path):
    root, _ = run
    export_stage(root, "source", tmp_path / "out", "jsonl", images="link")
    row = _jsonl(tmp_path / "out")[0]
    linked = tmp_path / "out" / row["images"][0]
    stored = RunStore(root, create=False).images.path(row["image_sha256"][0])
    assert os.path.samefile(linked, stored)


def test_none_keeps_hashes(run, tmp_path):
    root, _ = run
    export_stage(root, "source", tmp_path / "out", "jsonl", images="none")
    row = _jsonl(tmp_path / "out")[0]
    assert row["images"] == row["image_sha256"] and len(row["images"][0]) == 64
    assert not (tmp_path / "out" / "images").exists()


def test_jsonl_embed_gives_data_uris(run, tmp_path):
    root, blobs = run
    export_stage(root, "source", tmp_path / "out", "jsonl", images="embed")
    row = _jsonl(tmp_path / "out")[0]
    uri = row["images"][1]
    assert uri.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == blobs[row["image_sha256"][1]]


def test_parquet_default_embeds_image_features(run, tmp_path):
    import datasets

    root, blobs = run
    assert export_stage(root, "source", tmp_path / "out", "parquet") == 3
    shutil.rmtree(root)
    files = sorted(str(p) for p in (tmp_path / "out").glob("*.parquet"))
    table = pq.read_table(files[0])
    first = table.column("images")[0].as_py()
    assert [img["bytes"] for img in first] == [blobs[d] for d in table.column("image_sha256")[0].as_py()]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert isinstance(ds.features["images"].feature, datasets.Image)
    row = ds.filter(lambda r: r["id"] == "a")[0]
    assert [im.size for im in row["images"]] == [(12, 12), (20, 10)]
    assert row["images"][0].getpixel((0, 0)) == (255, 0, 0)


def test_hf_default_embeds_and_loads_without_the_run(run, tmp_path):
    import datasets

    root, _ = run
    assert export_stage(root, "source", tmp_path / "out", "hf") == 3
    shutil.rmtree(root)
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert isinstance(ds.features["images"].feature, datasets.Image)
    by_id = {r["id"]: r for r in ds}
    assert by_id["a"]["images"][1].size == (20, 10) and by_id["b"]["images"] == []
    assert by_id["d"]["extra"] == 7 and by_id["a"]["extra"] is None
    assert by_id["d"]["image_sha256"] == by_id["a"]["image_sha256"][:1]


def test_hf_copy_holds_relative_paths(run, tmp_path):
    import datasets

    root, blobs = run
    export_stage(root, "source", tmp_path / "out", "hf", images="copy")
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    row = next(r for r in ds if r["id"] == "a")
    assert (tmp_path / "out" / row["images"][0]).read_bytes() == blobs[row["image_sha256"][0]]


def test_copy_images_function(run, tmp_path):
    root, blobs = run
    store = RunStore(root, create=False)
    digest = next(iter(blobs))
    rows = [{"id": "x", "images": [digest]}, {"id": "y"}]
    out = copy_images(store, rows, tmp_path / "dest")
    assert rows[0]["images"] == [digest]  # inputs untouched
    assert out[0]["image_sha256"] == [digest] and out[1]["images"] == []
    assert (tmp_path / "dest" / out[0]["images"][0]).read_bytes() == blobs[digest]
    again = copy_images(store.images, rows, tmp_path / "dest", "copy")  # idempotent
    assert again == out
    with pytest.raises(DualcurateError, match="--images 'zip'"):
        copy_images(store, rows, tmp_path / "dest", "zip")
    with pytest.raises(DualcurateError, match="not in the image store"):
        copy_images(store, [{"images": ["0" * 64]}], tmp_path / "dest")


def test_image_extension():
    assert image_extension(_png("red")[:16]) == "png"
    assert image_extension(_jpeg("red")[:16]) == "jpg"
    assert image_extension(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert image_extension(b"hello") == "bin"


def test_cli_images_option(run, run_cli):
    root, _ = run
    result = run_cli("export", str(root), "--stage", "source", "--to", "x", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert "images: copy" in result.stdout
    assert (result.cwd / "x" / "images").is_dir()
    result = run_cli("export", str(root), "--stage", "source", "--to", "y", "--images", "none")
    assert result.exit_code == 0 and "(parquet, images: none)" in result.stdout
    assert run_cli("export", str(root), "--stage", "source", "--to", "z",
                   "--images", "zip").exit_code == 2
