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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from dualcurate import DualcurateError, Sample, Source, StageConfig
from dualcurate.schema import sample_id
from dualcurate_hf.cleaning import CleaningOptions, clean_item
from dualcurate_hf.dedup import DedupOptions, EmbeddingIndex, NearDuplicateIndex, exact_key
from dualcurate_hf.images import ImageNormaliser, ImageOptions
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
from dualcurate_hf.readers import SourceSpec, expand_files, location_problems, open_reader
from dualcurate_hf.report import SourceReport, StandardisationReport

if TYPE_CHECKING:
    from dualcurate.context import StageContext
    from dualcurate.plugins import PluginHost

Row = dict[str, Any]


class HFDatasetConfig(StageConfig):
    """Options of the hf-dataset source (see docs/sources.md)."""

    runtime_fields = frozenset({"batch_size"})

    sources: list[SourceSpec] = Field(min_length=1)
    batch_size: int = Field(512, ge=1)
    images: ImageOptions = ImageOptions()
    cleaning: CleaningOptions = CleaningOptions()
    dedup: DedupOptions = DedupOptions()
    append_choices: bool = True
    llm_clean_engine: str | None = None
    llm_clean_options: dict[str, Any] = {}
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
    def check(self, host: PluginHost) -> list[str]:
        problems = [p for spec in self.config.sources for p in location_problems(spec)]
        engine = self.config.llm_clean_engine
        if engine is not None and engine not in host.engines():
            problems.append(f"llm_clean_engine: {engine!r} is not a registered engine; "
                            f"registered: {', '.join(host.engines()) or '(none)'}")
        if self.config.dedup.near and self.config.dedup.method == "embeddings":
            try:
                import sentence_transformers  # noqa: F401
            except ImportError:
                problems.append("dedup.method = \"embeddings\" needs sentence-transformers; "
                                "pip install sentence-transformers, or use method = \"minhash\"")
        return problems

    def signature(self) -> str:
        """Config signature plus the size and mtime of local input files, so edited data
        is re-read instead of reusing old shards."""
        h = hashlib.sha256(super().signature().encode())
        for spec in self.config.sources:
            for path in _fingerprint_files(spec):
                try:
                    st = path.stat()
                    h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
                except OSError:
                    h.update(f"{path}|missing".encode())
        return h.hexdigest()[:16]

    # -- reading ------------------------------------------------------------------------------
    def read(self, ctx: StageContext) -> Iterator[list[Row]]:
        if ctx.images is None:
            raise DualcurateError("hf-dataset: the stage context has no image store; run it "
                                  "in a pipeline or with StageContext.ephemeral()")
        cfg = self.config
        report = StandardisationReport()
        near_minhash = cfg.dedup.near and cfg.dedup.method == "minhash"
        normaliser = ImageNormaliser(ctx.images, cfg.images, want_dhash=near_minhash)
        near: NearDuplicateIndex | EmbeddingIndex | None = None
        if cfg.dedup.near:
            near = NearDuplicateIndex(cfg.dedup) if near_minhash else EmbeddingIndex(cfg.dedup)
        cleaner = None
        if cfg.llm_clean_engine:
            cleaner = LLMCleaner(cfg.llm_clean_engine, cfg.llm_clean_options,
                                 cfg.llm_clean_prompt, cfg.llm_clean_system,
                                 cfg.llm_clean_sampling, cfg.llm_clean_images)
        # Compact per-row state (16-byte keys, 12-byte ids): the only memory that grows with
        # the number of rows read.
        seen_exact: set[bytes] = set()
        seen_ids: set[bytes] = set()
        # Open every source and check every mapping before the first row is yielded.
        plans = []
        for spec in cfg.sources:
            reader = open_reader(spec, cfg.batch_size)
            columns = resolve_columns(spec.fields, reader.columns, spec.name, spec.keep_columns)
            plans.append((spec, reader, columns, needed_columns(columns, spec.keep_columns)))
        for spec, reader, columns, needed in plans:
            rep = report.source(spec.name, spec.domain, spec.location)
            index = 0
            for records, base_dir in reader.batches(needed):
                if spec.limit is not None:
                    records = records[: max(spec.limit - index, 0)]
                    if not records:
                        break
                items = []
                for record in records:
                    item = self._standardise(record, index, spec, columns, base_dir,
                                             normaliser, rep)
                    index += 1
                    if item is not None:
                        items.append(item)
                if cleaner is not None:
                    items = self._llm_clean(items, cleaner, ctx, rep, report)
                out = []
                for item in items:
                    row = self._dedup_and_build(item, spec, rep, seen_exact, seen_ids, near, ctx)
                    if row is not None:
                        out.append(row)
                rep.rows_out += len(out)
                if out:
                    yield out
            rep.rows_in = index
            bad_lines = getattr(reader, "bad_lines", 0)
            if bad_lines:
                rep.dropped["unparseable_record"] += bad_lines
                rep.rows_in += bad_lines
        report.images = dict(normaliser.stats)
        path = report.write(ctx.workdir)
        ctx.log.info("%s (report: %s)", report.summary(), path)

    def _standardise(self, record: Row, index: int, spec: SourceSpec,
                     columns: dict[str, str | None], base_dir: Path | None,
                     normaliser: ImageNormaliser, rep: SourceReport) -> dict[str, Any] | None:
        """One record to the fields of a canonical row, or None (dropped, counted)."""
        where = f"{spec.name}#{index}"
        raw = map_record(record, columns)
        if raw.question is None or not raw.question.strip():
            rep.drop("missing_question", where)
            return None
        if raw.answer is None or not raw.answer.strip():
            rep.drop("missing_answer", f"{where}: {raw.question[:200]!r}")
            return None
        cleaned = clean_item(raw.question, raw.answer, self.config.cleaning)
        if cleaned.dropped:
            rep.drop(cleaned.dropped, f"{where}: {raw.question[:200]!r} / {raw.answer!r}")
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
            rep.drop("missing_image", where)
            return None
        digests: list[str] = []
        dhashes: list[int | None] = []
        sizes: list[list[int]] = []
        for value in raw.images:
            result = normaliser.normalise(value, base_dir)
            if result.reason is not None:
                rep.drop(result.reason, f"{where}: {result.message}")
                return None
            assert result.digest is not None
            digests.append(result.digest)
            dhashes.append(result.dhash)
            sizes.append([result.width, result.height])
        meta: dict[str, Any] = {"source_row": index}
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
                "domain": raw.domain or spec.domain, "meta": meta, "dhashes": dhashes,
                "where": where}

    def _llm_clean(self, items: list[dict[str, Any]], cleaner: LLMCleaner, ctx: StageContext,
                   rep: SourceReport, report: StandardisationReport) -> list[dict[str, Any]]:
        results = cleaner.clean(items, ctx)
        kept = []
        for item, result in zip(items, results, strict=True):
            report.llm_clean[result.status] = report.llm_clean.get(result.status, 0) + 1
            if not result.answerable:
                rep.drop("llm_unanswerable", f"{item['where']}: {item['question'][:200]!r}")
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
                         seen_exact: set[bytes], seen_ids: set[bytes],
                         near: NearDuplicateIndex | EmbeddingIndex | None,
                         ctx: StageContext) -> Row | None:
        """Drop the item as an exact or near duplicate of an earlier one, else build its row."""
        row_id = sample_id(spec.name, item["question"], item["answer"], item["images"])
        if item["meta"].get("source_id") is not None:
            row_id = sample_id(spec.name, "\x00id", item["meta"]["source_id"])
        key = exact_key(item["question"], item["choices"], item["images"])[:16]
        if self.config.dedup.exact:
            if key in seen_exact:
                rep.duplicates["exact"] += 1
                return None
        if near is not None:
            if isinstance(near, NearDuplicateIndex):
                other = near.check_and_add(row_id, item["question"], item["dhashes"])
            else:
                assert ctx.images is not None
                other = near.check_and_add(row_id, item["question"],
                                           [ctx.images.get(d) for d in item["images"]])
            if other is not None:
                rep.duplicates["near"] += 1
                return None
        if self.config.dedup.exact:
            seen_exact.add(key)
        # With exact dedup on, equal content ids (source, question, answer, images) mean equal
        # keys, dropped above, unless choices differ or a mapped id repeats: only those rows
        # (and all rows when dedup is off) need remembering to keep ids unique.
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


def _fingerprint_files(spec: SourceSpec) -> list[Path]:
    if spec.location in ("parquet", "jsonl", "csv"):
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
