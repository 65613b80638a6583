"""Exports for the tools the papers trained with: LLaMA-Factory (SFT, as MMFineReason) and verl
(RL, as OpenMMReasoner's GSPO). ``curate export RUN --stage S --to DIR --format
llamafactory|verl [--subset NAME] [--mode row|long|short] [--name NAME]``.

* ``llamafactory``: ``DIR/NAME.json`` in LLaMA-Factory's ShareGPT format (``messages`` with
  ``role``/``content``, ``images`` as paths relative to DIR, one ``<image>`` per image in the
  user turn) and ``DIR/dataset_info.json`` registering it, so ``dataset_dir: DIR`` and
  ``dataset: NAME`` in a LLaMA-Factory config just work. Each row is trained in its mode: the
  ``mode`` column the Dual Tuning judge writes (``--mode row``, the default when the column is
  there), or ``long`` / ``short`` for every row. L examples come from verified traces, one per
  trace up to ``--max-traces``. The user turn starts with the mode's prefix and the system
  prompt is the mode's, both as the judge trained and evaluated the dual model (its options in
  the run's recipe; ``Answer directly.`` / ``Think step by step.`` by default).
* ``verl``: ``DIR/NAME.parquet`` in verl's RL schema: ``data_source`` (the row's source),
  ``prompt`` (chat messages, ``<image>`` placeholders), ``images`` (bytes, the form verl's
  ``RLHFDataset`` decodes), ``ability`` (the domain), ``reward_model`` (``style = "rule"``,
  ``ground_truth`` = the gold answer) and ``extra_info`` (id, split, index, question, answer,
  answer type, choices, then the fields plugins add: the difficulty filter's pass rate; the
  rl-subset carve-out's ``rl`` / ``sft`` stands for the split).

``--subset`` picks rows the way RL and SFT mixes are cut: ``eval`` (``split = "eval"``),
``all``, or a subset a plugin adds over its own columns (hook ``dualcurate_export_extras``,
:mod:`dualcurate.export_extras`): the rl-subset plugin's ``rl`` / ``sft``, the difficulty
plugin's ``hard`` / ``nontrivial``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dualcurate.errors import DualcurateError
from dualcurate.export import image_extension, place_image
from dualcurate.formats import (
    FORMAT_INSTRUCTION,
    MODE_PREFIXES,
    render_answer,
    render_mode_prompt,
    render_trace,
)
from dualcurate.store import RunStore, kept

if TYPE_CHECKING:
    from dualcurate.export_extras import ExportField, ExportSubset
    from dualcurate.plugins import PluginHost

TOOL_FORMATS = ("llamafactory", "verl")
#: what each tool's export carries of the images by default, and what it accepts
TOOL_IMAGES = {"llamafactory": ("copy", ("copy", "link", "none")),
               "verl": ("embed", ("embed", "none"))}
#: core's own subsets: name -> the column a stage needs for it, and how to get that column
SUBSETS: dict[str, tuple[str, str] | None] = {
    "all": None, "eval": ("split", "a source with eval rows")}
SHORT_PREFIX, LONG_PREFIX = MODE_PREFIXES["short"], MODE_PREFIXES["long"]
RL_SYSTEM_PROMPT = FORMAT_INSTRUCTION
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def question_text(row: dict[str, Any]) -> str:
    """The question, with lettered options for multiple choice unless it lists them."""
    question = str(row.get("question") or "")
    choices = [str(c) for c in row.get("choices") or []]
    if not choices or all(c in question for c in choices):
        return question
    lines = [f"{LETTERS[i]}. {c}" if i < len(LETTERS) else c for i, c in enumerate(choices)]
    return question + "\n" + "\n".join(lines)


def _subset_rows(store: RunStore, stage: str, subset: str, all_rows: bool,
                 extras: list[ExportSubset] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of ``stage`` in ``subset`` (core's, or one of ``extras``, the plugins')."""
    added = {s.name: s for s in extras or []}
    for name in added.keys() & SUBSETS.keys():
        raise DualcurateError(f"export subset {name!r} of plugin {added[name].plugin!r}: core "
                              f"has a subset of that name; the plugin must name it otherwise")
    if subset not in SUBSETS and subset not in added:
        names = [*SUBSETS, *(f"{s.name} ({s.help})" for s in added.values())]
        raise DualcurateError(f"--subset {subset!r}: use {', '.join(names)}")
    extra = added.get(subset)
    need = SUBSETS.get(subset) or (extra and (extra.column, extra.hint))
    shards = store.finished_shards(stage)
    if not shards:
        names = ", ".join(s["name"] for s in store.manifest["stages"]) or "(none)"
        raise DualcurateError(f"run {store.root}: stage {stage!r} has no rows; stages: {names}")
    columns: set[str] = set()
    for i in shards:
        table = store.read_shard(stage, i)
        columns |= set(table.column_names)
        if not (all_rows or (extra is not None and extra.all_rows)):
            table = kept(table)
        if extra is not None:  # a plugin's cut, over rows that have its column
            if extra.column in table.column_names:
                yield from filter(extra.keep, table.to_pylist())
            continue
        for row in table.to_pylist():
            if subset == "all" or row.get("split") == "eval":
                yield row
    if need and need[0] not in columns:
        raise DualcurateError(f"--subset {subset}: stage {stage!r} has no {need[0]!r} column; "
                              f"export the stage that adds it ({need[1]}), or --subset all")


def _judge_prompts(store: RunStore) -> dict[str, str]:
    """The judge's mode prompts from the run's recipe (defaults when it has no judge)."""
    prompts = {"user_prefix_short": SHORT_PREFIX, "user_prefix_long": LONG_PREFIX,
               "system_prompt_short": "", "system_prompt_long": ""}
    recipe = store.manifest.get("recipe") or {}
    for rec in store.manifest.get("stages", []):
        if rec.get("kind") == "efficacy_judge":
            opts = recipe.get(rec["name"]) or {}
            prompts.update({k: str(opts[k]) for k in prompts if opts.get(k) is not None})
    return prompts


def _verified(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in row.get("traces") or []
            if t and t.get("verdict") == "correct" and not t.get("truncated")
            and (t.get("reasoning") or "").strip()]


def export_llamafactory(store: RunStore, stage: str, target: Path, *, name: str,
                        subset: str = "all", all_rows: bool = False, mode: str | None = None,
                        images: str = "copy", max_traces: int = 1,
                        subsets: list[ExportSubset] | None = None) -> dict[str, Any]:
    """Write ``NAME.json`` and ``dataset_info.json`` into ``target``; return counts."""
    prompts = _judge_prompts(store)
    records: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    rows = 0
    for row in _subset_rows(store, stage, subset, all_rows, subsets):
        rows += 1
        row_mode = mode or ("row" if "mode" in row else "long")
        if row_mode == "row":
            row_mode = row.get("mode")
            if row_mode not in ("long", "short"):
                skipped["no mode (run the dual-tuning judge, or --mode long|short)"] += 1
                continue
        if row_mode == "short":
            completions = [render_answer(str(row.get("answer") or ""))]
        else:
            completions = [render_trace(t.get("reasoning") or "",
                                        (t.get("answer") or "").strip()
                                        or str(row.get("answer") or ""))
                           for t in _verified(row)[:max_traces]]
            if not completions:
                skipped["no verified trace"] += 1
                continue
        digests = list(row.get("images") or [])
        if images == "none":
            paths = []
        else:
            paths = [place_image(store.images, d, target, images) for d in digests]
        prefix = prompts[f"user_prefix_{row_mode}"]
        text = question_text(row)
        user = "<image>" * len(paths) + render_mode_prompt(text, prefix)
        system = prompts[f"system_prompt_{row_mode}"]
        for completion in completions:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": user},
                {"role": "assistant", "content": completion}]
            records.append({"messages": messages, "images": paths, "id": row.get("id"),
                            "mode": row_mode, "domain": row.get("domain"),
                            "source": row.get("source")})
            modes[row_mode] += 1
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{name}.json").write_text(json.dumps(records, ensure_ascii=False, indent=1),
                                         encoding="utf-8")
    columns = {"messages": "messages"}
    if images != "none":
        columns["images"] = "images"
    entry = {"file_name": f"{name}.json", "formatting": "sharegpt", "columns": columns,
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                      "assistant_tag": "assistant", "system_tag": "system"}}
    info_path = target / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info[name] = entry  # other datasets already registered there stay
    info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return {"rows": rows, "examples": len(records), "modes": dict(modes),
            "skipped": dict(skipped)}


VERL_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
#: core's fields of verl's ``extra_info``; plugins' fields follow
VERL_EXTRA_INFO = {"id": pa.string(), "split": pa.string(), "index": pa.int64(),
                   "question": pa.string(), "answer": pa.string(),
                   "answer_type": pa.string(), "choices": pa.list_(pa.string())}


def export_verl(store: RunStore, stage: str, target: Path, *, name: str, subset: str = "all",
                all_rows: bool = False, images: str = "embed",
                system_prompt: str | None = RL_SYSTEM_PROMPT,
                subsets: list[ExportSubset] | None = None,
                fields: list[ExportField] | None = None) -> dict[str, Any]:
    """Write ``NAME.parquet`` in verl's RL schema into ``target``; return counts.
    ``subsets`` and ``fields``: what plugins add (``extra_info`` gets ``fields`` after core's
    own)."""
    added = [f for f in fields or [] if not f.refines]
    refining = [f for f in fields or [] if f.refines]
    for f in added:
        if f.name in VERL_EXTRA_INFO:
            raise DualcurateError(f"export field {f.name!r} of plugin {f.plugin!r}: extra_info "
                                  f"has it already; the plugin must name it otherwise (or "
                                  f"refine core's)")
    for f in refining:
        if VERL_EXTRA_INFO.get(f.name) != f.type:
            raise DualcurateError(f"export field {f.name!r} of plugin {f.plugin!r} refines "
                                  f"core's, but extra_info has no {f.name!r} of type {f.type}")
    records = []
    for index, row in enumerate(_subset_rows(store, stage, subset, all_rows, subsets)):
        digests = list(row.get("images") or [])
        pics = [] if images == "none" else [
            {"bytes": data, "path": f"{d}.{image_extension(data[:16])}"}
            for d in digests for data in [store.images.get(d)]]
        content = "<image>" * len(pics) + question_text(row)
        prompt = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": content}]
        answer = str(row.get("answer") or "")
        extra = {"id": str(row.get("id") or ""), "split": str(row.get("split") or ""),
                 "index": index, "question": str(row.get("question") or ""), "answer": answer,
                 "answer_type": str(row.get("answer_type") or ""),
                 "choices": [str(c) for c in row.get("choices") or []],
                 **{f.name: f.value(row) for f in added}}
        for f in refining:
            value = f.value(row)
            if value is not None:
                extra[f.name] = value
        records.append({"data_source": str(row.get("source") or "dualcurate"),
                        "prompt": prompt, "images": pics,
                        "ability": str(row.get("domain") or "general"),
                        "reward_model": {"style": "rule", "ground_truth": answer},
                        "extra_info": extra})
    schema = pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("images", pa.list_(VERL_IMAGE)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([*VERL_EXTRA_INFO.items(),
                                  *((f.name, f.type) for f in added)])),
    ])
    target.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(records, schema=schema)
    # small row groups when images are embedded, as datasets writes image data
    pq.write_table(table, target / f"{name}.parquet",
                   row_group_size=100 if any(r["images"] for r in records) else 10_000)
    return {"rows": len(records), "examples": len(records)}


def export_tool(run: str | Path, stage: str, to: str | Path, fmt: str, *,
                all_rows: bool = False, images: str | None = None, subset: str = "all",
                mode: str | None = None, name: str | None = None, max_traces: int = 1,
                host: PluginHost | None = None) -> dict[str, Any]:
    """``curate export --format llamafactory|verl``: write ``to``; return counts. The
    plugins' subsets and fields (hook ``dualcurate_export_extras``) come from ``host``
    (default: :func:`dualcurate.report.report_host`, the installed plugins and the run's)."""
    from dualcurate.report import ensure_run_plugins, report_host

    if fmt not in TOOL_FORMATS:
        raise DualcurateError(f"--format {fmt!r}: use {', '.join(TOOL_FORMATS)}")
    default, allowed = TOOL_IMAGES[fmt]
    images = images or default
    if images not in allowed:
        raise DualcurateError(f"--images {images} does not go with --format {fmt}: use "
                              f"{', '.join(allowed)}")
    if mode not in (None, "row", "long", "short"):
        raise DualcurateError(f"--mode {mode!r}: use row, long or short")
    store = RunStore(run, create=False)
    if host is None:
        host = report_host(store.manifest)
    else:
        ensure_run_plugins(host, store.manifest)
    subsets, fields = host.export_extras()
    target = Path(to)
    name = name or (stage if subset == "all" else f"{stage}_{subset}")
    if fmt == "llamafactory":
        return export_llamafactory(store, stage, target, name=name, subset=subset,
                                   all_rows=all_rows, mode=mode, images=images,
                                   max_traces=max_traces, subsets=subsets)
    return export_verl(store, stage, target, name=name, subset=subset, all_rows=all_rows,
                       images=images, subsets=subsets, fields=fields)
