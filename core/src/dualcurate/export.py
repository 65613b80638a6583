"""Export a stage's rows as Parquet, JSON lines or a ``datasets.save_to_disk`` folder.

Rows name their images by the sha256 of the bytes in the run's image store; an export that
only carried those hashes would be useless away from the run directory. ``images`` says what
the export carries instead (:data:`IMAGE_MODES`); the hashes always stay in ``image_sha256``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dualcurate.errors import DualcurateError, StoreError
from dualcurate.store import ImageStore, RunStore, image_data_url, image_extension, kept

#: ``copy``: files under ``<to>/images/``, rows hold paths relative to ``<to>``;
#: ``link``: the same paths as hard links into the run's image store (symbolic links across
#: file systems); ``embed``: the bytes inside the export (the ``datasets`` Image feature in
#: Parquet and hf, ``data:`` URIs in JSON lines); ``none``: hashes only.
IMAGE_MODES = ("copy", "link", "embed", "none")

#: Usable on another machine with nothing else: files next to a JSON-lines file, bytes inside
#: Parquet shards and ``datasets`` folders.
DEFAULT_IMAGES = {"jsonl": "copy", "parquet": "embed", "hf": "embed"}

IMAGES_DIR = "images"

def _store_path(images: ImageStore, digest: str) -> Path:
    path = images.path(digest)
    if not path.exists():
        raise StoreError(f"image {digest[:12]}…: not in the image store {images.root}; "
                         f"the run directory is incomplete, rerun the source stage")
    return path


def image_relpath(images: ImageStore, digest: str) -> str:
    """Where :func:`place_image` puts an image, relative to the export folder."""
    with open(_store_path(images, digest), "rb") as fh:
        ext = image_extension(fh.read(16))
    return f"{IMAGES_DIR}/{digest[:2]}/{digest}.{ext}"


def place_image(images: ImageStore, digest: str, dest: Path, mode: str) -> str:
    """Copy or link one stored image under ``dest``; return its path relative to ``dest``.

    Idempotent: an image already there (an earlier row, an earlier export) is left alone.
    """
    src = _store_path(images, digest)
    rel = image_relpath(images, digest)
    target = dest / rel
    if target.exists() or target.is_symlink():
        return rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)  # a killed export never leaves a torn image under its name
    elif mode == "link":
        try:
            os.link(src, target)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            os.symlink(src.resolve(), target)  # another file system: a symbolic link
    else:
        raise DualcurateError(f"place_image: mode {mode!r} is not copy or link")
    return rel


def _embedded(images: ImageStore, digest: str) -> dict[str, Any]:
    data = images.get(digest)
    return {"bytes": data, "path": f"{digest}.{image_extension(data[:16])}"}


def _data_uri(images: ImageStore, digest: str) -> str:
    return image_data_url(images.get(digest))


def _check_mode(mode: str) -> None:
    if mode not in IMAGE_MODES:
        raise DualcurateError(f"--images {mode!r}: use {', '.join(IMAGE_MODES)}")


def copy_images(store: RunStore | ImageStore, rows: Iterable[dict[str, Any]], dest: str | Path,
                mode: str = "copy") -> list[dict[str, Any]]:
    """Rows whose ``images`` an export folder ``dest`` carries, per ``mode``.

    ``copy``/``link`` place the files under ``dest/images/`` and give paths relative to
    ``dest``; ``embed`` gives ``data:`` URIs (JSON-ready); ``none`` leaves the hashes. Every
    returned row has ``image_sha256`` (the store hashes). The input rows are not modified.
    """
    _check_mode(mode)
    images = store.images if isinstance(store, RunStore) else store
    dest = Path(dest)
    out = []
    for row in rows:
        digests = list(row.get("images") or [])
        new = dict(row)
        new["image_sha256"] = digests
        if mode in ("copy", "link"):
            new["images"] = [place_image(images, d, dest, mode) for d in digests]
        elif mode == "embed":
            new["images"] = [_data_uri(images, d) for d in digests]
        out.append(new)
    return out


_EMBEDDED_TYPE = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


def _with_images(table: pa.Table, images: ImageStore, dest: Path, mode: str) -> pa.Table:
    """``table`` with ``images`` as the export carries them and ``image_sha256`` added."""
    if "images" not in table.column_names:
        return table
    digests = table.column("images").combine_chunks()
    lists = digests.to_pylist()
    if mode in ("copy", "link"):
        col = pa.array([None if ds is None else [place_image(images, d, dest, mode) for d in ds]
                        for ds in lists], pa.list_(pa.string()))
    elif mode == "embed":
        col = pa.array([None if ds is None else [_embedded(images, d) for d in ds]
                        for ds in lists], _EMBEDDED_TYPE)
    else:
        col = digests
    i = table.column_names.index("images")
    table = table.set_column(i, "images", col)
    return table.append_column("image_sha256", digests)


def _hf_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``datasets`` metadata that decodes ``images`` as Image features."""
    import datasets

    features = datasets.Features.from_arrow_schema(schema)
    features["images"] = datasets.List(datasets.Image())
    return schema.with_metadata({**(schema.metadata or {}), **features.arrow_schema.metadata})


def export_stage(run: str | Path, stage: str, to: str | Path, fmt: str,
                 all_rows: bool = False, images: str | None = None) -> int:
    """Write ``stage``'s rows (kept ones unless ``all_rows``) to ``to``; return the count.

    ``images`` is one of :data:`IMAGE_MODES` (default per format: :data:`DEFAULT_IMAGES`).
    """
    if fmt not in DEFAULT_IMAGES:
        raise DualcurateError(f"--format {fmt!r}: use parquet, jsonl or hf")
    mode = images or DEFAULT_IMAGES[fmt]
    _check_mode(mode)
    store = RunStore(run, create=False)
    shards = store.finished_shards(stage)
    if not shards:
        names = ", ".join(s["name"] for s in store.manifest["stages"]) or "(none)"
        raise DualcurateError(f"run {run}: stage {stage!r} has no rows; stages: {names}")
    target = Path(to)
    target.mkdir(parents=True, exist_ok=True)

    def tables(table_mode: str = mode):
        for i in shards:
            table = store.read_shard(stage, i)
            table = table if all_rows else kept(table)
            yield i, _with_images(table, store.images, target, table_mode)

    n = 0
    if fmt == "parquet":
        schema = _export_schema(store, stage, mode)
        for i, table in tables():
            table = _conform(table, schema)
            pq.write_table(table, target / f"{stage}-{i:05d}.parquet")
            n += table.num_rows
    elif fmt == "jsonl":
        with open(target / f"{stage}.jsonl", "w", encoding="utf-8") as fh:
            # embed: data: URIs (JSON has no bytes), made row by row from the hashes
            for _, table in tables("none" if mode == "embed" else mode):
                for row in table.to_pylist():
                    if mode == "embed" and row.get("images"):
                        row["images"] = [_data_uri(store.images, d) for d in row["image_sha256"]]
                    fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                    n += 1
    else:
        n = _export_hf(store, stage, tables(), target, mode)
    return n


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (missing ones null), in its order."""
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _export_schema(store: RunStore, stage: str, mode: str) -> pa.Schema:
    """One schema for every shard of an export (later stages may add columns to some shards
    only; ``datasets`` refuses Parquet files whose columns differ)."""
    schema = store.stage_schema(stage)
    assert schema is not None, "called with committed shards only"
    if "images" not in schema.names:
        return schema
    i = schema.get_field_index("images")
    if mode == "embed":
        schema = schema.set(i, pa.field("images", _EMBEDDED_TYPE))
    schema = schema.append(pa.field("image_sha256", pa.list_(pa.string())))
    return _hf_schema(schema) if mode == "embed" else schema


def _export_hf(store: RunStore, stage: str, tables: Iterable[tuple[int, pa.Table]],
               target: Path, mode: str) -> int:
    """A ``save_to_disk`` folder; embedded bytes go through a memory-mapped Arrow file first
    so an export never holds every image in memory at once."""
    import tempfile

    import datasets
    from datasets.table import MemoryMappedTable

    parts = [t for _, t in tables] if mode != "embed" else None
    if parts is not None:
        table = pa.concat_tables(parts, promote_options="permissive")
        datasets.Dataset(table).save_to_disk(str(target))
        return table.num_rows
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".export-") as tmp:
        path = os.path.join(tmp, "rows.arrow")
        schema = _export_schema(store, stage, mode)
        n = 0
        with pa.ipc.new_stream(path, schema) as writer:
            for _, table in tables:
                writer.write_table(_conform(table, schema))
                n += table.num_rows
        datasets.Dataset(MemoryMappedTable.from_file(path)).save_to_disk(str(target))
    return n
