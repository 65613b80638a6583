"""Streaming readers for every supported location: Parquet, JSON Lines, CSV, a
``save_to_disk`` directory, an image folder with a metadata file, and the Hugging Face Hub.

Each reader knows its column names before reading rows (so the field mapping is checked up
front) and yields batches of plain dict records together with the folder that relative image
paths are resolved against. Memory stays flat in the dataset's size: record batches are read
one at a time, only the mapped columns are read where the format allows it.
"""

from __future__ import annotations

import codecs
import csv
import glob
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dualcurate import DualcurateError
from dualcurate_hf.mapping import FieldMapping

Batch = tuple[list[dict[str, Any]], Path | None]
LOCATIONS = ("hub", "load_from_disk", "parquet", "jsonl", "json", "csv", "image_folder")
#: Key under which line-oriented readers put a record's 1-based file line (JSON Lines, CSV,
#: JSON arrays); the source reports drops with it. Not a column name any dataset uses.
LINE_KEY = "\x00line"
FILE_KEY = "\x00file"
_SURROGATE = re.compile("[\udc80-\udcff]")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")


warnings.filterwarnings("ignore", message='Field name "json" in "SourceSpec" shadows')


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
    json: str | list[str] | None = None
    csv: str | list[str] | None = None
    image_folder: str | None = None
    fields: FieldMapping = FieldMapping()
    keep_columns: list[str] = []
    limit: int | None = Field(None, ge=1)
    #: Text encoding of JSON Lines / JSON / CSV files; a record that does not decode is
    #: dropped as ``undecodable_text`` with its line number (never the end of the source).
    encoding: str = "utf-8"
    #: Names of the positions of records that are lists (``["q", "a", "img"]`` rows of a JSON
    #: array or of JSON Lines): ``columns = ["question", "answer", "image_id"]``.
    columns: list[str] | None = None
    #: Folder that image values naming files (ids, relative names, a ``fields.image`` format
    #: string such as ``"{image_id}.png"``) are resolved against; may contain ``{split}``.
    image_dir: str | None = None
    #: Fraction of rows read that the source must keep, else ``curate run`` warns (and with
    #: ``--strict`` fails); a source keeping 0 rows always warns. None: the stage's setting.
    min_kept_fraction: float | None = Field(None, ge=0, le=1)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}; use a Python codec name such as "
                             f"utf-8, utf-8-sig, latin-1, cp1252, gb18030") from None
        return value

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
    """The files a parquet/jsonl/json/csv location names (globs expanded, sorted)."""
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
    if spec.location in ("parquet", "jsonl", "json", "csv"):
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
        #: Records that could not be read, as ``(file, line, reason, message)``: the source
        #: drains them after each batch and counts each as a drop with its line number.
        self.problems: list[tuple[str, int, str, str]] = []

    def drain_problems(self) -> list[tuple[str, int, str, str]]:
        out, self.problems = self.problems, []
        return out

    def _as_record(self, value: Any, path: Path, line: int) -> dict[str, Any] | None:
        """A parsed JSON value as a record (objects as they are, lists through ``columns``),
        or None after noting the problem."""
        if isinstance(value, list) and self.spec.columns:
            if len(value) > len(self.spec.columns):
                self.problems.append((str(path), line, "unparseable_record",
                                      f"a list of {len(value)} values, columns names "
                                      f"{len(self.spec.columns)}"))
                return None
            value = dict(zip(self.spec.columns, value, strict=False))
        if not isinstance(value, dict):
            hint = "; name its positions with columns = [...]" if isinstance(value, list) else ""
            self.problems.append((str(path), line, "unparseable_record",
                                  f"a {type(value).__name__}, not an object{hint}"))
            return None
        value[LINE_KEY] = line
        value[FILE_KEY] = str(path)
        return value

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
    """JSON Lines, decoded line by line: a line that does not decode (``undecodable_text``)
    or parse (``unparseable_record``) is dropped with its line number; the rest are read."""

    def __init__(self, spec: SourceSpec, batch_size: int):
        super().__init__(spec, batch_size)
        self.files = expand_files(spec)

    @property
    def bad_lines(self) -> int:  # kept for callers of the old counter
        return len(self.problems)

    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        problems = list(self.problems)  # a peek: problems are noted when the rows are read
        for records, _ in self._records(self.files[0], limit=1000):
            for record in records:
                seen.update(dict.fromkeys(k for k in record if k not in (LINE_KEY, FILE_KEY)))
        found, self.problems = self.problems[len(problems):], problems
        if not seen and found:
            _, line, reason, message = found[0]
            fmt = "JSON" if isinstance(self, JsonReader) else "JSON Lines"
            raise self._unreadable(self.files[0], ValueError(
                f"no record read; line {line}: {reason}: {message}"),
                f"{fmt} ({self.spec.encoding})")
        return list(seen)

    def _records(self, path: Path, limit: int | None = None) -> Iterator[Batch]:
        return self._batched(self._jsonl_records(path), path, limit)

    def _batched(self, records: Iterator[dict[str, Any]], path: Path,
                 limit: int | None) -> Iterator[Batch]:
        """``records`` of one file in batches of ``batch_size`` (at most ``limit`` of them)."""
        batch: list[dict[str, Any]] = []
        for parsed, record in enumerate(records, 1):
            batch.append(record)
            if len(batch) == self.batch_size:
                yield batch, path.parent
                batch = []
            if limit is not None and parsed >= limit:
                break
        if batch:
            yield batch, path.parent

    def _jsonl_records(self, path: Path) -> Iterator[dict[str, Any]]:
        parsed = failed = 0
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise self._unreadable(path, exc, "JSON Lines") from None
        with fh:
            for number, raw in enumerate(fh, 1):
                try:
                    line = raw.decode(self.spec.encoding)
                except UnicodeDecodeError as exc:
                    failed += 1
                    self.problems.append((str(path), number, "undecodable_text",
                                          f"not {self.spec.encoding} at byte {exc.start}: "
                                          f"{raw[max(exc.start - 20, 0):exc.start + 20]!r}; "
                                          f"set encoding = \"...\" for this source if the "
                                          f"file is in another encoding"))
                    continue
                if number == 1:
                    line = line.lstrip("\ufeff")
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    failed += 1
                    if parsed == 0 and failed >= 20:
                        raise self._unreadable(path, exc, "JSON Lines") from None
                    self.problems.append((str(path), number, "unparseable_record",
                                          f"{exc.msg} at column {exc.colno}"))
                    continue
                record = self._as_record(value, path, number)
                if record is None:
                    failed += 1
                    if parsed == 0 and failed >= 20:
                        raise self._unreadable(path, ValueError(
                            "the first 20 records are not objects"), "JSON Lines")
                    continue
                parsed += 1
                yield record

    def batches(self, columns: list[str]) -> Iterator[Batch]:
        for path in self.files:
            yield from self._records(path)


class JsonReader(JsonlReader):
    """A JSON file holding an array of records (objects, or lists named by ``columns``), or
    an object with one array-valued key (``{"data": [...]}``); anything else is read as JSON
    Lines. The array is parsed incrementally, one element at a time (memory stays flat), and
    each element knows the line it starts on."""

    def _records(self, path: Path, limit: int | None = None) -> Iterator[Batch]:
        try:
            with path.open("rb") as fh:
                head = fh.read(4096).decode(self.spec.encoding, errors="replace")
        except OSError as exc:
            raise self._unreadable(path, exc, "JSON") from None
        stripped = head.lstrip("\ufeff \t\r\n")
        if not stripped.startswith(("[", "{")):
            yield from super()._records(path, limit)
            return
        if stripped.startswith("{") and not _wrapped_array(stripped):
            yield from super()._records(path, limit)  # JSON Lines in a .json file
            return
        yield from self._batched(self._array_records(path), path, limit)

    def _array_records(self, path: Path) -> Iterator[dict[str, Any]]:
        for line, value, error in _iter_json_array(path, self.spec.encoding):
            if error is not None:
                self.problems.append((str(path), line, *error))
                if error[0] == "unparseable_record" and value is _STOP:
                    break
                continue
            record = self._as_record(value, path, line)
            if record is not None:
                yield record


_STOP = object()


def _wrapped_array(head: str) -> bool:
    """``{"key": [`` at the start: an object wrapping the array of records."""
    return re.match(r'\{\s*"[^"]*"\s*:\s*\[', head) is not None


def _iter_json_array(path: Path, encoding: str
                     ) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
    """(line, element, None) for each element of the file's top-level array (or of the array
    under an object's first key), or (line, _, (reason, message)) for an element that does not
    decode or parse. Reads 1 MiB at a time; bytes that do not decode are kept as surrogates so
    that only the element holding them is dropped."""
    decoder = json.JSONDecoder()
    with path.open("rb") as fh:
        dec = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
        buf = ""
        line = 1
        pos = 0
        eof = False

        def more() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            chunk = fh.read(1 << 20)
            if not chunk:
                eof = True
                buf = buf[pos:] + dec.decode(b"", final=True)
                pos = 0
                return True
            buf = buf[pos:] + dec.decode(chunk)
            pos = 0
            return True

        more()
        buf = buf.lstrip("\ufeff")
        # skip to the opening bracket of the array
        while True:
            i = buf.find("[", pos)
            if i >= 0:
                line += buf.count("\n", pos, i)
                pos = i + 1
                break
            line += buf.count("\n", pos)
            pos = len(buf)
            if not more():
                return
        while True:
            # skip whitespace and commas
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    if buf[pos] == "\n":
                        line += 1
                    pos += 1
                if pos < len(buf) or not more():
                    break
            if pos >= len(buf) or buf[pos] == "]":
                return
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    if end == len(buf) and not eof and isinstance(value, int | float):
                        raise ValueError("number may continue")  # read on: 12|34
                    break
                except ValueError as exc:
                    if more():
                        continue
                    yield line, _STOP, ("unparseable_record", f"{exc}; the rest of the "
                                        f"array is not read")
                    return
            text = buf[pos:end]
            start_line = line
            line += text.count("\n")
            pos = end
            if _SURROGATE.search(text):
                yield start_line, None, ("undecodable_text",
                                         f"not {encoding}; set encoding = \"...\" for this "
                                         f"source if the file is in another encoding")
                continue
            yield start_line, value, None


class CsvReader(Reader):
    """CSV with a header, every cell as text (``"05"`` stays ``"05"``). Read with Python's csv
    module over lines decoded one by one, so a record with bytes that do not decode
    (``undecodable_text``) or with more cells than the header (``unparseable_record``) is
    dropped with its line number and the rest of the file is read."""

    def __init__(self, spec: SourceSpec, batch_size: int):
        super().__init__(spec, batch_size)
        self.files = expand_files(spec)

    def _header(self, path: Path) -> list[str]:
        try:
            with path.open("rb") as fh:
                first = fh.readline().decode(self.spec.encoding).lstrip("\ufeff")
            return next(csv.reader([first]), [])
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise self._unreadable(path, exc, f"CSV ({self.spec.encoding})") from None

    @property
    def columns(self) -> list[str]:
        return self._header(self.files[0])

    def batches(self, columns: list[str]) -> Iterator[Batch]:
        for path in self.files:
            header = self._header(path)
            wanted = [(i, c) for i, c in enumerate(header) if c in columns]
            encoding = self.spec.encoding
            with path.open("rb") as fh:
                lines = (raw.decode(encoding, errors="surrogateescape") for raw in fh)
                reader = csv.reader(lines, strict=True)
                next(reader, None)  # the header
                batch: list[dict[str, Any]] = []
                start = 2
                while True:
                    try:
                        cells = next(reader)
                    except StopIteration:
                        break
                    except csv.Error as exc:
                        self.problems.append((str(path), start, "unparseable_record", str(exc)))
                        start = reader.line_num + 1
                        continue
                    line, start = start, reader.line_num + 1
                    if not cells:
                        continue
                    if len(cells) > len(header):
                        self.problems.append((str(path), line, "unparseable_record",
                                              f"{len(cells)} cells, the header names "
                                              f"{len(header)}"))
                        continue
                    if any(_SURROGATE.search(c) for c in cells):
                        self.problems.append((str(path), line, "undecodable_text",
                                              f"not {encoding}; set encoding = \"...\" for "
                                              f"this source if the file is in another "
                                              f"encoding"))
                        continue
                    record: dict[str, Any] = {c: cells[i] if i < len(cells) else ""
                                              for i, c in wanted}
                    record[LINE_KEY] = line
                    record[FILE_KEY] = str(path)
                    batch.append(record)
                    if len(batch) == self.batch_size:
                        yield batch, path.parent
                        batch = []
                if batch:
                    yield batch, path.parent


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
        sub_spec = SourceSpec(name=self.spec.name, encoding=self.spec.encoding,
                              columns=self.spec.columns, **{kind: str(path)})
        return (JsonlReader if kind == "jsonl" else CsvReader)(sub_spec, self.batch_size)

    @property
    def columns(self) -> list[str]:
        return self._sub(self.metadata[0]).columns

    def batches(self, columns: list[str]) -> Iterator[Batch]:
        for path in self.metadata:
            sub = self._sub(path)
            for rows, _ in sub.batches(columns):
                self.problems.extend(sub.drain_problems())
                yield rows, path.parent
            self.problems.extend(sub.drain_problems())


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
    "parquet": ParquetReader, "jsonl": JsonlReader, "json": JsonReader, "csv": CsvReader,
    "load_from_disk": DiskReader, "image_folder": ImageFolderReader, "hub": HubReader,
}


def open_reader(spec: SourceSpec, batch_size: int) -> Reader:
    """The reader for a source's location."""
    return READERS[spec.location](spec, batch_size)
