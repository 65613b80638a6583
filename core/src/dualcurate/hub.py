"""``curate push``: a stage's rows as a Hugging Face Hub dataset, with a generated dataset card.

The upload is built as a folder first, exactly as it will appear in the dataset repository:

* ``data/train-00000-of-0000N.parquet``: the stage's rows (kept rows unless ``all_rows``), the
  ``images`` column (sha256 digests into the run's image store) replaced by the image bytes as
  a ``datasets`` ``List(Image())`` feature, so the Hub's viewer shows the pictures. Row groups
  hold 100 rows when the data has images (what ``datasets`` itself uses for image data: small
  enough for the viewer to page through), 10,000 otherwise; files are cut at about 500 MB.
* ``README.md``: the dataset card: YAML front matter (license, tags, the ``configs`` entry that
  points the viewer at ``data/``) and the run's story: counts per stage, teacher and verifier,
  plugin names and versions, the verification table, each plugin's report section (its
  markdown: hook ``dualcurate_report_sections``; those the report shows above its stage table
  come first here too), and the recipe as run.

``--dry-run DIR`` stops there; otherwise the folder goes up in one commit with
``huggingface_hub`` (``create_repo`` + ``upload_folder``), so what a dry run shows is, byte for
byte, what a push uploads. ``HF_ENDPOINT`` and ``HF_TOKEN`` are honoured as everywhere in
``huggingface_hub``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dualcurate.errors import DualcurateError
from dualcurate.export import _hf_schema, _with_images
from dualcurate.store import RunStore, kept

if TYPE_CHECKING:
    from dualcurate.report_sections import ReportSection

#: a markdown image whose file is in the run's image store (report.md sits in the run)
_RUN_IMAGE_LINK = re.compile(r" ?!\[[^\]]*\]\(images/[0-9a-f]{2}/[0-9a-f]+\)")
IMAGE_ROW_GROUP = 100
TEXT_ROW_GROUP = 10_000
MAX_FILE_BYTES = 500 * 1024 * 1024
DEFAULT_LICENSE = "other"


@dataclass
class PushResult:
    """What was (or would be) uploaded."""

    folder: Path
    files: list[str]
    rows: int
    url: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def _stage_names(store: RunStore) -> list[str]:
    return [s["name"] for s in store.manifest.get("stages", [])]


def write_data(store: RunStore, stage: str, data_dir: Path, all_rows: bool = False
               ) -> tuple[list[Path], int, bool]:
    """Write the stage's rows as ``train-XXXXX-of-YYYYY.parquet`` files; return (files, rows,
    has_images)."""
    shards = store.finished_shards(stage)
    if not shards:
        names = ", ".join(_stage_names(store)) or "(none)"
        raise DualcurateError(f"run {store.root}: stage {stage!r} has no rows; stages: {names}")
    data_dir.mkdir(parents=True, exist_ok=True)
    tables = []
    for i in shards:
        t = store.read_shard(stage, i)
        tables.append(t if all_rows else kept(t))
    has_images = any("images" in t.column_names
                     and any(len(v or []) for v in t.column("images").to_pylist())
                     for t in tables)
    row_group = IMAGE_ROW_GROUP if has_images else TEXT_ROW_GROUP
    parts: list[Path] = []
    writer: pq.ParquetWriter | None = None
    written = 0
    rows = 0
    schema: pa.Schema | None = None
    for table in tables:
        if table.num_rows == 0:
            continue
        # the image bytes as the datasets Image feature, hashes kept in image_sha256
        table = _with_images(table, store.images, data_dir, "embed")
        table = table.replace_schema_metadata(None)
        if schema is None:
            schema = _hf_schema(table.schema) if "images" in table.column_names \
                else table.schema
        elif not table.schema.equals(schema, check_metadata=False):
            table = table.cast(schema.remove_metadata())  # e.g. an all-null column in a shard
        for start in range(0, table.num_rows, row_group):
            chunk = table.slice(start, row_group)
            if writer is None or written >= MAX_FILE_BYTES:
                if writer is not None:
                    writer.close()
                parts.append(data_dir / f"part-{len(parts):05d}.parquet")
                writer = pq.ParquetWriter(parts[-1], schema)
                written = 0
            writer.write_table(chunk, row_group_size=row_group)
            written += chunk.nbytes
            rows += chunk.num_rows
    if writer is not None:
        writer.close()
    if not parts:  # a stage whose rows were all dropped: an empty file keeps the schema
        empty = tables[0].schema
        parts.append(data_dir / "part-00000.parquet")
        pq.write_table(pa.Table.from_pylist([], schema=empty), parts[0])
    named = []
    for i, part in enumerate(parts):
        target = data_dir / f"train-{i:05d}-of-{len(parts):05d}.parquet"
        part.rename(target)
        named.append(target)
    return named, rows, has_images


# -- the dataset card -----------------------------------------------------------------------
def _yaml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML string


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()
                          if v is not None)
        return "{ " + items + " }" if items else "{}"
    return json.dumps(str(value))


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def recipe_toml(recipe: dict[str, Any]) -> str:
    """The resolved recipe of a run's manifest as TOML (None values left out)."""
    out = []
    for section, table in recipe.items():
        if not isinstance(table, dict):
            continue
        out.append(f"[{_toml_key(section)}]")
        for key, value in table.items():
            if value is None:
                continue
            out.append(f"{_toml_key(key)} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _teacher(store: RunStore) -> tuple[str, list[str]]:
    """(distiller plugin, models named by the recipe and by the traces)."""
    recipe = store.manifest.get("recipe") or {}
    for rec in store.manifest.get("stages", []):
        if rec.get("kind") != "distiller":
            continue
        opts = recipe.get(rec["name"]) or {}
        plugin = str(rec.get("plugin") or opts.get("use") or "")
        plugin_opts = ((opts.get("plugins") or {}).get(plugin) or {})
        # the manifest records the resolved config: the engine reference, {use, model, ...}
        engine = {**(opts.get("engine") if isinstance(opts.get("engine"), dict) else {}),
                  **(plugin_opts.get("engine") if isinstance(plugin_opts.get("engine"), dict)
                     else {})}
        models = [str(engine["model"])] if engine.get("model") else []
        for table in store.iter_tables(rec["name"]):
            if "traces" not in table.column_names:
                break
            for traces in table.column("traces").to_pylist():
                for t in traces or []:
                    m = t.get("model") or t.get("engine")
                    if m and str(m) not in models:
                        models.append(str(m))
            break  # the first shard names the models
        return plugin, models
    return "", []


def dataset_card(store: RunStore, stage: str, repo_id: str, rows: int, has_images: bool,
                 license: str = DEFAULT_LICENSE) -> str:
    """The README.md of the pushed dataset: the run's pipeline, teacher, verification and
    plugins, then each plugin's report section (its markdown; those ordered above the
    report's stage table first, as in ``report.md``), then the recipe."""
    from dualcurate.report import collect, run_sections
    from dualcurate.report_sections import ORDER

    data = collect(store, samples_per_group=0)
    sections = run_sections(store)
    manifest = store.manifest
    stages = manifest.get("stages", [])
    plugins_used = {str(s.get("plugin")) for s in stages}
    versions = manifest.get("plugins") or {}
    teacher_plugin, teacher_models = _teacher(store)
    verifiers = [str(s.get("plugin")) for s in stages if s.get("kind") == "verifier"]

    front = ["---", f"license: {_yaml_str(license)}",
             f"pretty_name: {_yaml_str(repo_id.split('/')[-1])}",
             "tags:", "- dualcurate", "- reasoning", "- chain-of-thought"]
    if has_images:
        front += ["- multimodal", "task_categories:", "- image-text-to-text"]
    else:
        front += ["task_categories:", "- text-generation"]
    front += ["size_categories:", f"- {_size_category(rows)}",
              "configs:", "- config_name: default", "  data_files:", "  - split: train",
              "    path: data/train-*", "---", ""]

    body = [f"# {repo_id.split('/')[-1]}", "",
            f"{rows} rows of the `{stage}` stage of a dualcurate run "
            f"(`{manifest.get('recipe_source') or 'recipe'}`, status {data.status}), curated "
            f"for reasoning efficacy by the stages below.", ""]
    if has_images:
        body += ["Images are embedded in the `images` column (bytes and a name per image).", ""]
    early = [s for s in sections if s.order < ORDER["stages"]]
    body += _section_paragraphs(early)
    body += ["## Pipeline", "",
             _md_table(["stage", "kind", "plugin", "status", "rows in", "rows out", "seconds"],
                       [[s["name"], s.get("kind") or "", s.get("plugin"), s.get("status"),
                         s.get("rows_in", 0), s.get("rows_out", 0),
                         f"{float(s.get('seconds') or 0):.1f}"] for s in stages]), ""]
    body += ["## Teacher and verifier", "",
             f"* teacher: {', '.join(teacher_models) or 'none'}"
             + (f" (plugin `{teacher_plugin}`)" if teacher_plugin else ""),
             f"* verifier: {', '.join(f'`{v}`' for v in verifiers) or 'none'}", ""]
    body += ["## Plugins", "",
             _md_table(["plugin", "version", "ran a stage"],
                       [[n, v, "yes" if n in plugins_used else ""]
                        for n, v in sorted(versions.items())]), ""]
    if data.verdicts:
        verdicts = sorted({v for c in data.verdicts.values() for v in c})
        table = []
        for domain, counts in sorted(data.verdicts.items()):
            total = sum(counts.values())
            rate = f"{100 * counts.get('correct', 0) / total:.1f}" if total else "-"
            table.append([domain, *[counts.get(v, 0) for v in verdicts], total, rate])
        body += ["## Verification", "", "Teacher traces by verdict, per domain.", "",
                 _md_table(["domain", *verdicts, "traces", "correct %"], table), ""]
    body += _section_paragraphs([s for s in sections if s.order >= ORDER["stages"]])
    body += ["## Recipe as run", "", "```toml",
             recipe_toml(manifest.get("recipe") or {}).rstrip(), "```", ""]
    return "\n".join(front + body)


def _section_paragraphs(sections: list[ReportSection]) -> list[str]:
    """The plugins' own paragraphs (their sections' markdown), as in report.md, less the
    links to the run's image store (``images/``, not uploaded: they would be broken)."""
    body: list[str] = []
    for section in sections:
        text = _RUN_IMAGE_LINK.sub("", section.markdown).strip()
        if text:
            body += [f"## {section.title}", "", text, ""]
    return body


# -- building and pushing -------------------------------------------------------------------
def build_upload(run: str | Path, stage: str, folder: str | Path, repo_id: str,
                 license: str = DEFAULT_LICENSE, all_rows: bool = False) -> PushResult:
    """Write into ``folder`` exactly what :func:`push_stage` uploads."""
    store = RunStore(run, create=False)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise DualcurateError(f"--dry-run {folder}: the folder is not empty; give a new or "
                              f"empty folder so it holds exactly what would be uploaded")
    folder.mkdir(parents=True, exist_ok=True)
    files, rows, has_images = write_data(store, stage, folder / "data", all_rows=all_rows)
    card = dataset_card(store, stage, repo_id, rows, has_images, license=license)
    (folder / "README.md").write_text(card, encoding="utf-8")
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return PushResult(folder=folder, files=names, rows=rows,
                      stats={"images": has_images, "data_files": len(files)})


def push_stage(run: str | Path, stage: str, repo_id: str, private: bool = False,
               dry_run: str | Path | None = None, license: str = DEFAULT_LICENSE,
               all_rows: bool = False, token: str | None = None) -> PushResult:
    """Push ``stage``'s rows to the dataset repository ``repo_id`` (or, with ``dry_run``, only
    write what would be uploaded there)."""
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise DualcurateError(f"--repo {repo_id!r}: give the dataset repository as "
                              f"OWNER/NAME, e.g. my-org/my-curated-data")
    if dry_run is not None:
        return build_upload(run, stage, dry_run, repo_id, license=license, all_rows=all_rows)
    from huggingface_hub import HfApi

    tmp = Path(tempfile.mkdtemp(prefix="dualcurate-push-"))
    try:
        result = build_upload(run, stage, tmp / "upload", repo_id, license=license,
                              all_rows=all_rows)
        # read HF_ENDPOINT now, not when huggingface_hub was first imported
        api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, repo_type="dataset",
                                     folder_path=str(result.folder),
                                     commit_message=f"dualcurate: {stage} of {Path(run).name}",
                                     delete_patterns=["data/*.parquet"])
        except Exception as exc:  # network, auth, a refused repo: say what and how to fix
            raise DualcurateError(f"push to {repo_id} failed: {type(exc).__name__}: {exc}. "
                                  f"Check HF_TOKEN (a write token) and the repository name; "
                                  f"--dry-run DIR shows what would be uploaded") from exc
        result.url = str(getattr(info, "commit_url", "") or info)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
