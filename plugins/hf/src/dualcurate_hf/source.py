"""The ``hf-dataset`` source: brings any number of datasets (Hub, ``save_to_disk``, Parquet,
JSON Lines, CSV, image folders) into the canonical schema, one recipe, in a deterministic order.

Per record: map the columns (:mod:`.mapping`), clean the texts by rule (:mod:`.cleaning`),
infer the answer type, normalise and store the images (:mod:`.images`); per batch, optionally
clean through an LLM (:mod:`.llm_clean`); then drop duplicates across all sources
(:mod:`.dedup`). Every drop is counted by reason in ``standardisation.json``
(:mod:`.report`) in the stage's work folder.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from dualcurate import DualcurateError, Sample, Source, StageConfig
from dualcurate.recipe import EngineRef
from dualcurate.schema import sample_id
from dualcurate_hf.cleaning import CleaningOptions, clean_item
from dualcurate_hf.dedup import (
    DedupOptions,
    EmbeddingIndex,
    NearDuplicateIndex,
    NearMatch,
    exact_key,
)
from dualcurate_hf.images import ImageNormaliser, ImageOptions, resolve_image_name
from dualcurate_hf.llm_clean import DEFAULT_PROMPT, DEFAULT_SYSTEM, LLMCleaner, compile_template
from dualcurate_hf.mapping import (
    choice_answer,
    infer_answer_type,
    map_record,
    needed_columns,
    normalise_answer_type,
    resolve_columns,
    with_choices,
)
from dualcurate_hf.readers import (
    FILE_KEY,
    LINE_KEY,
    SourceSpec,
    expand_files,
    location_problems,
    open_reader,
)
from dualcurate_hf.report import DropLog, SourceReport, StandardisationReport

if TYPE_CHECKING:
    from dualcurate.context import StageContext
    from dualcurate.plugins import PluginHost

Row = dict[str, Any]


class HFDatasetConfig(StageConfig):
    """Options of the hf-dataset source (see docs/sources.md)."""

    runtime_fields = frozenset({"batch_size", "min_kept_fraction", "strict"})

    sources: list[SourceSpec] = Field(min_length=1)
    batch_size: int = Field(512, ge=1)
    images: ImageOptions = ImageOptions()
    cleaning: CleaningOptions = CleaningOptions()
    dedup: DedupOptions = DedupOptions()
    append_choices: bool = True
    #: A source keeping less than this fraction of the rows it read (or none) is warned
    #: about at the end of the stage; with ``strict`` (``curate run --strict``) it fails it.
    min_kept_fraction: float = Field(0.5, ge=0, le=1)
    strict: bool = False
    #: the engine of the LLM cleaning pass (None: no pass), a reference:
    #: ``llm_clean_engine = { use = "openai", model = "...", base_url = "..." }``
    llm_clean_engine: EngineRef | None = None
    llm_clean_prompt: str = DEFAULT_PROMPT
    llm_clean_system: str | None = DEFAULT_SYSTEM
    llm_clean_sampling: dict[str, Any] = {}
    llm_clean_images: bool = False

    @model_validator(mode="after")
    def _unique_names(self) -> HFDatasetConfig:
        names = [s.name for s in self.sources]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dups)}")
        return self

    @field_validator("llm_clean_prompt")
    @classmethod
    def _template_compiles(cls, value: str) -> str:
        try:
            compile_template(value, "llm_clean_prompt")
        except DualcurateError as exc:
            raise ValueError(str(exc)) from None
        return value


class HFDatasetSource(Source):
    """Reads and standardises datasets into canonical rows (``hf-dataset``)."""

    name = "hf-dataset"
    Config = HFDatasetConfig
    version = "1"
    config: HFDatasetConfig

    # -- validation before the run -----------------------------------------------------------
    def preflight(self, host: PluginHost) -> list[str]:
        # llm_clean_engine is a reference: the pipeline resolves and validates it
        problems = [p for spec in self.config.sources for p in location_problems(spec)]
        if self.config.dedup.near and self.config.dedup.method == "embeddings":
            try:
                import sentence_transformers  # noqa: F401
            except ImportError:
                problems.append("dedup.method = \"embeddings\" needs sentence-transformers; "
                                "pip install sentence-transformers, or use method = \"simhash\"")
        return problems

    def signature(self) -> str:
        """Config signature plus the contents of the local files it reads (data files, a
        saved dataset's arrow files, an image folder's metadata), so data edited in place is
        re-read instead of reusing old shards, even when its size and mtime are kept. Hashes
        are cached by size, mtime, ctime and inode: a rerun only ``stat``s unchanged files.
        Image files named by the data are not hashed here: give an edited image a new name."""
        from dualcurate.fingerprint import file_digest

        h = hashlib.sha256(super().signature().encode())
        for spec in self.config.sources:
            for path in _fingerprint_files(spec):
                try:
                    h.update(f"{path}|{file_digest(path)}".encode())
                except OSError:
                    h.update(f"{path}|missing".encode())
        return h.hexdigest()[:16]

    # -- reading ------------------------------------------------------------------------------
    #: ids of the rows in a conflict (collected by the first pass of dedup.conflicts = "drop")
    _conflict_ids: set[str] | None = None
    _drop_ids: frozenset[str] = frozenset()

    def read(self, ctx: StageContext) -> Iterator[list[Row]]:
        self._drop_ids = frozenset()
        if self.config.dedup.conflicts == "drop":
            # a conflict's first row may be yielded long before its second is read: find
            # every conflict first, then read again dropping them (decisions are deterministic)
            self._conflict_ids = set()
            try:
                for _ in self._read(ctx, announce=False):
                    pass
                found = frozenset(self._conflict_ids)
            finally:
                self._conflict_ids = None
            self._drop_ids = found
        yield from self._read(ctx, announce=True)

    def _read(self, ctx: StageContext, announce: bool) -> Iterator[list[Row]]:
        if ctx.images is None:
            raise DualcurateError("hf-dataset: the stage context has no image store; run it "
                                  "in a pipeline or with StageContext.ephemeral()")
        cfg = self.config
        report = StandardisationReport()
        drops = DropLog(Path(ctx.workdir) / "drops.jsonl")
        near: NearDuplicateIndex | EmbeddingIndex | None = None
        if cfg.dedup.near:
            near = (NearDuplicateIndex(cfg.dedup) if cfg.dedup.method == "simhash"
                    else EmbeddingIndex(cfg.dedup))
        normaliser = ImageNormaliser(ctx.images, cfg.images,
                                     near=near if isinstance(near, NearDuplicateIndex) else None)
        cleaner = None
        if cfg.llm_clean_engine:
            cleaner = LLMCleaner(cfg.llm_clean_engine, cfg.llm_clean_prompt, cfg.llm_clean_system,
                                 cfg.llm_clean_sampling, cfg.llm_clean_images)
        # Compact per-row state (16-byte keys, 12-byte ids): the only memory that grows with
        # the number of rows read, with the near-duplicate index's 32 bytes per row.
        seen_exact: dict[bytes, bytes] = {}
        seen_ids: set[bytes] = set()
        # Open every source and check every mapping before the first row is yielded.
        plans = []
        for spec in cfg.sources:
            reader = open_reader(spec, cfg.batch_size)
            template = _image_template(spec)
            fields = spec.fields.model_copy(update={"image": None}) if template else spec.fields
            columns = resolve_columns(fields, reader.columns, spec.name, spec.keep_columns)
            needed = needed_columns(columns, spec.keep_columns)
            if template is not None:
                columns["image"] = None
                refs = _template_fields(template)
                missing = [r for r in refs if r not in reader.columns and r != "split"]
                if missing:
                    raise DualcurateError(
                        f"source {spec.name!r}: fields.image = {template!r} names "
                        f"{', '.join(repr(m) for m in missing)}, not in the data; available "
                        f"columns: {', '.join(reader.columns) or '(none)'}")
                needed += [r for r in refs if r not in needed and r != "split"]
            plans.append((spec, reader, columns, needed, template))
        try:
            for spec, reader, columns, needed, template in plans:
                rep = report.source(spec.name, spec.domain, spec.location)
                index = 0
                image_dir = (Path(spec.image_dir.format(split=spec.split)).expanduser()
                             if spec.image_dir else None)
                for records, base_dir in reader.batches(needed):
                    self._reader_problems(reader, spec, rep, drops)
                    if spec.limit is not None:
                        records = records[: max(spec.limit - index, 0)]
                        if not records:
                            break
                    items = []
                    for record in records:
                        if template is not None:
                            record["\x00image"] = _format_image(template, record, spec)
                        item = self._standardise(record, index, spec, columns,
                                                 image_dir or base_dir, normaliser, rep,
                                                 drops, resolve=image_dir is not None
                                                 or template is not None)
                        index += 1
                        if item is not None:
                            items.append(item)
                    if cleaner is not None:
                        items = self._llm_clean(items, cleaner, ctx, rep, report, drops)
                    out = []
                    for item in items:
                        row = self._dedup_and_build(item, spec, rep, seen_exact, seen_ids,
                                                    near, ctx, drops)
                        if row is not None:
                            out.append(row)
                    rep.rows_out += len(out)
                    if out:
                        yield out
                self._reader_problems(reader, spec, rep, drops)
                rep.rows_in += index
        finally:
            drops.close()
            if near is not None:
                near.close()
        self.rows_read = sum(rep.rows_in for rep in report.sources.values())
        report.images = dict(normaliser.stats)
        if isinstance(near, NearDuplicateIndex):
            report.images["near_comparisons"] = near.images.comparisons
        warnings = report.check_kept(cfg.min_kept_fraction,
                                     {s.name: s.min_kept_fraction for s in cfg.sources})
        path = report.write(ctx.workdir)
        if not announce:
            return
        for line in report.console_lines():
            ctx.log.info("%s", line)
        ctx.log.info("standardisation report: %s; every dropped row: %s", path, drops.path)
        for warning in warnings:
            ctx.log.warning("%s", warning)
        if warnings and (cfg.strict or ctx.strict):
            raise DualcurateError(
                "strict: " + "; ".join(warnings) + f". See {drops.path} for every dropped row "
                "and why; lower min_kept_fraction if this is expected")

    def _note_conflict(self, row_id: str, other_id: str) -> None:
        if self._conflict_ids is not None:
            self._conflict_ids.update((row_id, other_id))

    def _reader_problems(self, reader: Any, spec: SourceSpec, rep: SourceReport,
                         drops: DropLog) -> None:
        """Records the reader could not read (bad bytes, bad JSON): counted drops."""
        for file, line, reason, message in reader.drain_problems():
            rep.rows_in += 1
            rep.drop(reason, f"{spec.name} line {line}: {message}")
            drops.write({"source": spec.name, "file": file, "line": line, "reason": reason,
                         "message": message, "question": None, "answer": None})

    def _standardise(self, record: Row, index: int, spec: SourceSpec,
                     columns: dict[str, str | None], base_dir: Path | None,
                     normaliser: ImageNormaliser, rep: SourceReport, drops: DropLog,
                     resolve: bool = False) -> dict[str, Any] | None:
        """One record to the fields of a canonical row, or None (dropped, counted)."""
        line = record.get(LINE_KEY, index)
        where = f"{spec.name}#{line}"
        raw = map_record(record, columns)
        if "\x00image" in record:
            raw.images = [record["\x00image"]] if record["\x00image"] is not None else []

        def drop(reason: str, message: str = "") -> None:
            rep.drop(reason, f"{where}: {message or repr((raw.question or '')[:200])}")
            drops.write({"source": spec.name, "file": record.get(FILE_KEY), "line": line,
                         "reason": reason, "message": message, "question": raw.question,
                         "answer": raw.answer})

        if raw.question is None or not raw.question.strip():
            drop("missing_question")
            return None
        if raw.answer is None or not raw.answer.strip():
            drop("missing_answer")
            return None
        cleaned = clean_item(raw.question, raw.answer, self.config.cleaning)
        if cleaned.dropped:
            drop(cleaned.dropped, f"{raw.question[:200]!r} / {raw.answer!r}")
            return None
        rep.cleaned.update(cleaned.changes)
        answer_type = normalise_answer_type(raw.answer_type) or infer_answer_type(
            cleaned.answer, raw.choices)
        answer = cleaned.answer
        question = cleaned.question
        if answer_type == "multiple_choice":
            answer = choice_answer(answer, raw.choices)
            if self.config.append_choices:
                question = with_choices(question, raw.choices)
        elif answer_type == "yes_no" and answer.lower().rstrip(".") in ("yes", "no"):
            answer = answer.rstrip(".").capitalize()
        if not raw.images and self.config.images.require_images:
            drop("missing_image")
            return None
        digests: list[str] = []
        near_images: list[int] = []
        sizes: list[list[int]] = []
        for value in raw.images:
            if resolve and base_dir is not None:
                value = resolve_image_name(value, base_dir)
            result = normaliser.normalise(value, base_dir)
            if result.reason is not None:
                message = result.message
                if result.reason == "image_unsupported_input" and isinstance(value, int):
                    message += ("; an id or file name? set image_dir (and fields.image = "
                                "\"{column}.png\" if it needs a suffix) for this source")
                drop(result.reason, message)
                return None
            assert result.digest is not None
            digests.append(result.digest)
            if result.near_index is not None:
                near_images.append(result.near_index)
            sizes.append([result.width, result.height])
        meta: dict[str, Any] = {"source_row": index}
        if LINE_KEY in record:
            meta["source_line"] = record[LINE_KEY]
        if raw.source_id is not None:
            meta["source_id"] = raw.source_id
        if cleaned.changes:
            meta["cleaned"] = cleaned.changes
        if sizes:
            meta["image_sizes"] = sizes
        for column in spec.keep_columns:
            value = record.get(column)
            meta[column] = value if isinstance(value, str | int | float | bool | None) else str(value)
        return {"question": question, "answer": answer, "answer_type": answer_type,
                "choices": raw.choices, "caption": raw.caption, "images": digests,
                "original_question": raw.question, "original_answer": raw.answer or "",
                "domain": raw.domain or spec.domain, "meta": meta, "near_images": near_images,
                "where": where, "line": line, "file": record.get(FILE_KEY)}

    def _llm_clean(self, items: list[dict[str, Any]], cleaner: LLMCleaner, ctx: StageContext,
                   rep: SourceReport, report: StandardisationReport,
                   drops: DropLog | None = None) -> list[dict[str, Any]]:
        results = cleaner.clean(items, ctx)
        kept = []
        for item, result in zip(items, results, strict=True):
            report.llm_clean[result.status] = report.llm_clean.get(result.status, 0) + 1
            if not result.answerable:
                rep.drop("llm_unanswerable", f"{item['where']}: {item['question'][:200]!r}")
                if drops is not None:
                    drops.write(_drop_record(item, "llm_unanswerable"))
                continue
            if result.question is not None and result.question != item["question"]:
                item["question"] = result.question
                item["meta"].setdefault("cleaned", []).append("llm")
                rep.cleaned["llm"] += 1
            if result.answer is not None:
                item["answer"] = result.answer
            kept.append(item)
        return kept

    def _dedup_and_build(self, item: dict[str, Any], spec: SourceSpec, rep: SourceReport,
                         seen_exact: dict[bytes, bytes], seen_ids: set[bytes],
                         near: NearDuplicateIndex | EmbeddingIndex | None,
                         ctx: StageContext, drops: DropLog | None = None) -> Row | None:
        """Drop the item as an exact or near duplicate of an earlier one, else build its row."""
        row_id = sample_id(spec.name, item["question"], item["answer"], item["images"])
        if item["meta"].get("source_id") is not None:
            row_id = sample_id(spec.name, "\x00id", item["meta"]["source_id"])
        key = exact_key(item["question"], item["choices"], item["images"])[:16]
        answer = answer_digest(item["answer"])
        if self.config.dedup.exact:
            kept = seen_exact.get(key)
            if kept is not None and kept[-len(answer):] == answer:
                rep.duplicates["exact"] += 1
                if drops is not None:
                    drops.write(_drop_record(item, "duplicate_exact", spec.name,
                                             kept_id=kept[:-len(answer)].hex(),
                                             kept_images=item["images"]))
                return None
            if kept is not None:  # same question and images, another gold answer: both kept
                self._note_conflict(row_id, kept[:-len(answer)].hex())
                rep.conflicts += 1
                rep.add_pair("conflict", _drop_record(item, "exact_conflict_kept", spec.name,
                                                      kept_id=kept[:-len(answer)].hex(),
                                                      kept_images=item["images"])
                             | {"id": row_id})
        if near is not None:
            match: NearMatch | None
            if isinstance(near, NearDuplicateIndex):
                match = near.check_and_add(row_id, item["question"], item["answer"],
                                           item["near_images"])
            else:
                assert ctx.images is not None
                match = near.check_and_add(row_id, item["question"],
                                           [ctx.images.get(d) for d in item["images"]],
                                           item["answer"])
            if match is not None and match.kind == "near":
                rep.duplicates["near"] += 1
                record = _drop_record(item, "duplicate_near", spec.name, kept_id=match.other,
                                      kept_images=match.other_images)
                rep.add_pair("near", record)
                if drops is not None:
                    drops.write(record)
                return None
            if match is not None:
                self._note_conflict(row_id, match.other)
                rep.conflicts += 1
                rep.add_pair("conflict", _drop_record(item, "near_conflict_kept", spec.name,
                                                      kept_id=match.other,
                                                      kept_images=match.other_images)
                             | {"id": row_id})
        if self.config.dedup.exact:
            seen_exact.setdefault(key, bytes.fromhex(row_id) + answer)  # the first one stays
        # With exact dedup on, equal content ids (source, question, answer, images) mean equal
        # keys, dropped above, unless choices differ or a mapped id repeats: only those rows
        # (and all rows when dedup is off) need remembering to keep ids unique.
        if row_id in self._drop_ids:  # dedup.conflicts = "drop": every row of a conflict
            rep.drop("conflict_dropped", f"{spec.name}: {item['question'][:80]!r}")
            if drops is not None:
                drops.write(_drop_record(item, "conflict_dropped", spec.name) | {"id": row_id})
            return None
        if not self.config.dedup.exact or spec.fields.id is not None or item["choices"]:
            base_id, n = row_id, 1
            while bytes.fromhex(row_id) in seen_ids:
                row_id = sample_id(spec.name, base_id, str(n))
                n += 1
            seen_ids.add(bytes.fromhex(row_id))
        rep.answer_types[item["answer_type"]] += 1
        sample = Sample(id=row_id, source=spec.name, domain=item["domain"],
                        images=item["images"], question=item["question"],
                        answer=item["answer"], answer_type=item["answer_type"],
                        choices=item["choices"], caption=item["caption"],
                        original_question=item["original_question"],
                        original_answer=item["original_answer"], meta=item["meta"])
        return sample.to_row()


def answer_digest(answer: str) -> bytes:
    """8 bytes standing for a gold answer as compared for duplicates (case and spacing
    folded): equal questions with unequal answers are a conflict, never a duplicate."""
    folded = " ".join(str(answer).casefold().split())
    return hashlib.sha256(folded.encode()).digest()[:8]


def _drop_record(item: dict[str, Any], reason: str, source: str | None = None,
                 **extra: Any) -> dict[str, Any]:
    """One line of drops.jsonl for a standardised item."""
    return {"source": source or item["where"].rsplit("#", 1)[0], "file": item.get("file"),
            "line": item.get("line"), "reason": reason, "question": item["question"],
            "answer": item["answer"], "images": item["images"], **extra}


def _image_template(spec: SourceSpec) -> str | None:
    """``fields.image`` when it is a format string (``"{image_id}.png"``), else None."""
    image = spec.fields.image
    return image if image is not None and "{" in image else None


def _template_fields(template: str) -> list[str]:
    return [name.split(".", 1)[0].split("[", 1)[0]
            for _, name, _, _ in string.Formatter().parse(template) if name]


def _format_image(template: str, record: Row, spec: SourceSpec) -> str | None:
    values = {k: v for k, v in record.items() if isinstance(k, str)}
    values.setdefault("split", spec.split)
    if any(values.get(name) in (None, "") for name in _template_fields(template)):
        return None
    return template.format_map(values)


def _fingerprint_files(spec: SourceSpec) -> list[Path]:
    if spec.location in ("parquet", "jsonl", "json", "csv"):
        return expand_files(spec)
    if spec.location in ("load_from_disk", "image_folder"):
        root = Path(getattr(spec, spec.location)).expanduser()
        if not root.is_dir():
            return [root]
        names = {"load_from_disk": ("state.json", "dataset_dict.json", "*.arrow"),
                 "image_folder": ("metadata.jsonl", "metadata.csv")}[spec.location]
        return sorted(p for name in names for p in root.rglob(name))
    return []


__all__ = ["HFDatasetConfig", "HFDatasetSource", "SourceSpec"]
