"""Streaming readers for every supported location: Parquet, JSON Lines, CSV, a
``save_to_disk`` directory, an image folder with a metadata file, and the Hugging Face Hub.

Each reader knows its column names before reading rows (so the field mapping is checked up
front) and yields batches of plain dict records together with the folder that relative image
paths are resolved against. Memory stays flat in the dataset's size: record batches are read
one at a time, only the mapped columns are read where the format allows it.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dualcurate import DualcurateError
from dualcurate_hf.mapping import FieldMapping

Batch = tuple[list[dict[str, Any]], Path | None]
LOCATIONS = ("hub", "load_from_disk", "parquet", "jsonl", "csv", "image_folder")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")


class SourceSpec(BaseModel):
    """``[[source.sources]]``: one dataset, where to read it and how its columns map."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    domain: str = "general"
    hub: str | None = None
    split: str = "train"
    revision: str | None = None
    config_name: str | None = None
    data_files: str | list[str] | None = None
    load_from_disk: str | None = None
    parquet: str | list[str] | None = None
    jsonl: str | list[str] | None = None
    csv: str | list[str] | None = None
    image_folder: str | None = None
    fields: FieldMapping = FieldMapping()
    keep_columns: list[str] = []
    limit: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_location(self) -> SourceSpec:
        given = [loc for loc in LOCATIONS if getattr(self, loc) is not None]
        if len(given) != 1:
            raise ValueError(f"source {self.name!r}: give exactly one of "
                             f"{', '.join(LOCATIONS)} (got {', '.join(given) or 'none'})")
        if self.data_files is not None and self.hub is None:
            raise ValueError(f"source {self.name!r}: data_files goes with hub (a builder such "
                             f"as hub = \"parquet\" or a dataset id); for local files use "
                             f"parquet/jsonl/csv = \"...\"")
        return self

    @property
    def location(self) -> str:
        return next(loc for loc in LOCATIONS if getattr(self, loc) is not None)


def expand_files(spec: SourceSpec) -> list[Path]:
    """The files a parquet/jsonl/csv location names (globs expanded, sorted)."""
    patterns = getattr(spec, spec.location)
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        files.extend(Path(m) for m in matches if Path(m).is_file())
    return files


def location_problems(spec: SourceSpec) -> list[str]:
    """Missing files or folders, found before anything runs."""
    where = getattr(spec, spec.location)
    if spec.location == "hub":
        return []
    if spec.location in ("parquet", "jsonl", "csv"):
        if not expand_files(spec):
            return [f"source {spec.name!r}: {spec.location} = {where!r} matches no file "
                    f"(relative paths start at {Path.cwd()}); fix the path or glob"]
        return []
    path = Path(where).expanduser()
    if not path.is_dir():
        return [f"source {spec.name!r}: {spec.location} = {where!r} is not a directory "
                f"(relative paths start at {Path.cwd()}); fix the path"]
    if spec.location == "image_folder" and not _metadata_files(path):
        return [f"source {spec.name!r}: image_folder {where!r} has no metadata.jsonl or "
                f"metadata.csv (one row per image with file_name, question, answer); add one"]
    return []


def _metadata_files(root: Path) -> list[Path]:
    return sorted(p for name in METADATA_FILES for p in root.rglob(name))


class Reader:
    """Base: ``columns`` (names the data has) and ``batches(columns)``."""

    def __init__(self, spec: SourceSpec, batch_size: int):
        self.spec = spec
        self.batch_size = batch_size
        problems = location_problems(spec)
        if problems:
            raise DualcurateError(problems[0])

    @property
    def columns(self) -> list[str]:
        raise NotImplementedError

    def batches(self, columns: list[str]) -> Iterator[Batch]:
        raise NotImplementedError

    def _unreadable(self, path: Path | str, exc: BaseException, fmt: str) -> DualcurateError:
        return DualcurateError(
            f"source {self.spec.name!r}: {path} is not readable as {fmt} "
            f"({type(exc).__name__}: {exc}); check the file or name the right format "
            f"(parquet, jsonl, csv, load_from_disk, image_folder)")


class ParquetReader(Reader):
    def __init__(self, spec: SourceSpec, batch_size: int):
        super().__init__(spec, batch_size)
        self.files = expand_files(spec)

    def _open(self, path: Path) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(path, exc, "Parquet") from None

    @property
    def columns(self) -> list[str]:
        return list(self._open(self.files[0]).schema_arrow.names)

    def batches(self, columns: list[str]) -> Iterator[Batch]:
        for path in self.files:
            pf = self._open(path)
            present = [c for c in columns if c in pf.schema_arrow.names]
            for record_batch in pf.iter_batches(batch_size=self.batch_size, columns=present):
                yield record_batch.to_pylist(), path.parent


class JsonlReader(Reader):
    def __init__(self, spec: SourceSpec, batch_size: int):
        super().__init__(spec, batch_size)
        self.files = expand_files(spec)
        self.bad_lines = 0

    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        bad_lines = self.bad_lines  # a peek: bad lines are counted when the rows are read
        for records, _ in self._records(self.files[0], limit=1000):
            for record in records:
                seen.update(dict.fromkeys(record))
        self.bad_lines = bad_lines
        return list(seen)

    def _records(self, path: Path, limit: int | None = None) -> Iterator[Batch]:
        batch: list[dict[str, Any]] = []
        parsed = 0
        try:
            with path.open(encoding="utf-8") as fh:
                for number, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        if parsed == 0 and number >= 20:
                            raise self._unreadable(path, exc, "JSON Lines") from None
                        self.bad_lines += 1
                        continue
                    if not isinstance(record, dict):
                        raise self._unreadable(path, TypeError(
                            f"line {number} is a {type(record).__name__}, not an object"),
                            "JSON Lines")
                    parsed += 1
                    batch.append(record)
                    if len(batch) == self.batch_size:
                        yield batch, path.parent
                        batch = []
                    if limit is not None and parsed >= limit:
                        break
        except UnicodeDecodeError as exc:
            raise self._unreadable(path, exc, "JSON Lines (UTF-8)") from None
        if parsed == 0 and self.bad_lines:
            raise self._unreadable(path, ValueError("no line parses as JSON"), "JSON Lines")
        if batch:
            yield batch, path.parent

    def batches(self, columns: list[str]) -> Iterator[Batch]:
        for path in self.files:
            yield from self._records(path)


class CsvReader(Reader):
    def __init__(self, spec: SourceSpec, batch_size: int):
        super().__init__(spec, batch_size)
        self.files = expand_files(spec)

    def _header(self, path: Path) -> list[str]:
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                return next(csv.reader(fh), [])
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise self._unreadable(path, exc, "CSV") from None

    @property
    def columns(self) -> list[str]:
        return self._header(self.files[0])

    def batches(self, columns: list[str]) -> Iterator[Batch]:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        for path in self.files:
            header = self._header(path)
            present = [c for c in columns if c in header]
            # Every column as text: "05" must stay "05", and "N/A" must reach the cleaner.
            convert = pcsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()),
                                          include_columns=present, strings_can_be_null=False)
            try:
                reader = pcsv.open_csv(path, convert_options=convert,
                                       read_options=pcsv.ReadOptions(block_size=1 << 22))
                for record_batch in reader:
                    rows = record_batch.to_pylist()
                    for start in range(0, len(rows), self.batch_size):
                        yield rows[start:start + self.batch_size], path.parent
            except pa.ArrowInvalid as exc:
                raise self._unreadable(path, exc, "CSV") from None


class DiskReader(Reader):
    """A ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` directory (memory-mapped)."""

    def __init__(self, spec: SourceSpec, batch_size: int):
        super().__init__(spec, batch_size)
        import datasets

        try:
            loaded = datasets.load_from_disk(str(Path(spec.load_from_disk or "").expanduser()))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise self._unreadable(spec.load_from_disk or "", exc,
                                   "a save_to_disk directory") from None
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise DualcurateError(
                    f"source {spec.name!r}: split {spec.split!r} not in {spec.load_from_disk}; "
                    f"it has {', '.join(loaded)}; set split = \"...\"")
            loaded = loaded[spec.split]
        self.dataset = loaded

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.column_names)

    def batches(self, columns: list[str]) -> Iterator[Batch]:
        view = self.dataset.select_columns([c for c in columns if c in self.columns])
        base = Path(self.spec.load_from_disk or ".").expanduser()
        # The Arrow view: no decoding of Image features (they stay {"bytes", "path"} dicts).
        for table in view.with_format("arrow").iter(batch_size=self.batch_size):
            yield table.to_pylist(), base


class ImageFolderReader(Reader):
    """A folder of images plus metadata.jsonl/.csv files (``file_name`` relative to each)."""

    def __init__(self, spec: SourceSpec, batch_size: int):
        super().__init__(spec, batch_size)
        self.metadata = _metadata_files(Path(spec.image_folder or "").expanduser())

    def _sub(self, path: Path) -> Reader:
        kind = "jsonl" if path.suffix == ".jsonl" else "csv"
        sub_spec = SourceSpec(name=self.spec.name, **{kind: str(path)})
        return (JsonlReader if kind == "jsonl" else CsvReader)(sub_spec, self.batch_size)

    @property
    def columns(self) -> list[str]:
        return self._sub(self.metadata[0]).columns

    def batches(self, columns: list[str]) -> Iterator[Batch]:
        for path in self.metadata:
            for rows, _ in self._sub(path).batches(columns):
                yield rows, path.parent


class HubReader(Reader):
    """``datasets.load_dataset(hub, streaming=True)``: for users' machines (needs network)."""

    def __init__(self, spec: SourceSpec, batch_size: int):
        super().__init__(spec, batch_size)
        import datasets

        try:
            self.dataset = datasets.load_dataset(spec.hub, name=spec.config_name,
                                                 data_files=spec.data_files,
                                                 split=spec.split, revision=spec.revision,
                                                 streaming=True)
        except Exception as exc:  # network, auth, unknown id: all reported the same way
            raise DualcurateError(
                f"source {spec.name!r}: cannot open hub dataset {spec.hub!r} (split "
                f"{spec.split!r}, config {spec.config_name!r}): {type(exc).__name__}: {exc}. "
                f"Check the id, your network and HF_TOKEN, or download it and use "
                f"load_from_disk / parquet") from None
        for column, feature in (self.dataset.features or {}).items():
            if isinstance(feature, datasets.Image):  # keep bytes: we decode once ourselves
                self.dataset = self.dataset.cast_column(column, datasets.Image(decode=False))

    @property
    def columns(self) -> list[str]:
        names = self.dataset.column_names
        if names is None:
            first = next(iter(self.dataset.take(1)), {})
            names = list(first)
        return list(names)

    def batches(self, columns: list[str]) -> Iterator[Batch]:
        for batch in self.dataset.iter(batch_size=self.batch_size):
            keys = [c for c in columns if c in batch]
            n = len(batch[keys[0]]) if keys else 0
            yield [{k: batch[k][i] for k in keys} for i in range(n)], None


READERS: dict[str, type[Reader]] = {
    "parquet": ParquetReader, "jsonl": JsonlReader, "csv": CsvReader,
    "load_from_disk": DiskReader, "image_folder": ImageFolderReader, "hub": HubReader,
}


def open_reader(spec: SourceSpec, batch_size: int) -> Reader:
    """The reader for a source's location."""
    return READERS[spec.location](spec, batch_size)
