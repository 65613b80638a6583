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
  answer type, choices, pass rate).

``--subset`` picks rows the way RL and SFT mixes are cut: ``rl`` / ``sft`` (the ``rl-subset``
carve-out's ``rl_split`` column; ``rl`` rows are kept = false by design, so they are read
regardless of keep), ``hard`` (pass rate 0), ``nontrivial`` (pass rate < 1, or an incorrect
rollout seen before adaptive sampling stopped), ``eval`` (``split = "eval"``), or ``all``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

TOOL_FORMATS = ("llamafactory", "verl")
#: what each tool's export carries of the images by default, and what it accepts
TOOL_IMAGES = {"llamafactory": ("copy", ("copy", "link", "none")),
               "verl": ("embed", ("embed", "none"))}
SUBSETS = ("all", "rl", "sft", "hard", "nontrivial", "eval")
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


def _subset_rows(store: RunStore, stage: str, subset: str, all_rows: bool
                 ) -> Iterator[dict[str, Any]]:
    if subset not in SUBSETS:
        raise DualcurateError(f"--subset {subset!r}: use {', '.join(SUBSETS)}")
    shards = store.finished_shards(stage)
    if not shards:
        names = ", ".join(s["name"] for s in store.manifest["stages"]) or "(none)"
        raise DualcurateError(f"run {store.root}: stage {stage!r} has no rows; stages: {names}")
    columns: set[str] = set()
    for i in shards:
        table = store.read_shard(stage, i)
        columns |= set(table.column_names)
        if not (all_rows or subset == "rl"):
            table = kept(table)
        for row in table.to_pylist():
            if subset == "all" or _in_subset(row, subset):
                yield row
    need = {"rl": "rl_split", "sft": "rl_split", "eval": "split", "hard": "pass_rate",
            "nontrivial": "pass_rate"}.get(subset)
    if need and need not in columns:
        hint = {"rl_split": "run the rl-subset filter", "split": "a source with eval rows",
                "pass_rate": "run the difficulty filter"}[need]
        raise DualcurateError(f"--subset {subset}: stage {stage!r} has no {need!r} column; "
                              f"export the stage that adds it ({hint}), or --subset all")


def _in_subset(row: dict[str, Any], subset: str) -> bool:
    if subset in ("rl", "sft"):  # the rl-subset carve-out's own column
        return row.get("rl_split") == subset
    if subset == "eval":
        return row.get("split") == "eval"
    rate = row.get("pass_rate")  # known when every rollout was drawn
    if subset == "hard":
        return rate is not None and float(rate) == 0
    # nontrivial: pass rate < 1, or an incorrect rollout seen before adaptive sampling stopped
    if rate is not None:
        return float(rate) < 1
    drawn, correct = row.get("pass_drawn"), row.get("pass_correct")
    return drawn is not None and correct is not None and correct < drawn


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
                        images: str = "copy", max_traces: int = 1) -> dict[str, Any]:
    """Write ``NAME.json`` and ``dataset_info.json`` into ``target``; return counts."""
    prompts = _judge_prompts(store)
    records: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    rows = 0
    for row in _subset_rows(store, stage, subset, all_rows):
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


def export_verl(store: RunStore, stage: str, target: Path, *, name: str, subset: str = "all",
                all_rows: bool = False, images: str = "embed",
                system_prompt: str | None = RL_SYSTEM_PROMPT) -> dict[str, Any]:
    """Write ``NAME.parquet`` in verl's RL schema into ``target``; return counts."""
    records = []
    for index, row in enumerate(_subset_rows(store, stage, subset, all_rows)):
        digests = list(row.get("images") or [])
        pics = [] if images == "none" else [
            {"bytes": data, "path": f"{d}.{image_extension(data[:16])}"}
            for d in digests for data in [store.images.get(d)]]
        content = "<image>" * len(pics) + question_text(row)
        prompt = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": content}]
        answer = str(row.get("answer") or "")
        extra = {"id": str(row.get("id") or ""),
                 "split": str(row.get("rl_split") or row.get("split") or ""),
                 "index": index, "question": str(row.get("question") or ""), "answer": answer,
                 "answer_type": str(row.get("answer_type") or ""),
                 "choices": [str(c) for c in row.get("choices") or []],
                 "pass_rate": None if row.get("pass_rate") is None
                 else float(row["pass_rate"])}
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
        ("extra_info", pa.struct([("id", pa.string()), ("split", pa.string()),
                                  ("index", pa.int64()), ("question", pa.string()),
                                  ("answer", pa.string()), ("answer_type", pa.string()),
                                  ("choices", pa.list_(pa.string())),
                                  ("pass_rate", pa.float64())])),
    ])
    target.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(records, schema=schema)
    # small row groups when images are embedded, as datasets writes image data
    pq.write_table(table, target / f"{name}.parquet",
                   row_group_size=100 if any(r["images"] for r in records) else 10_000)
    return {"rows": len(records), "examples": len(records)}


def export_tool(run: str | Path, stage: str, to: str | Path, fmt: str, *,
                all_rows: bool = False, images: str | None = None, subset: str = "all",
                mode: str | None = None, name: str | None = None, max_traces: int = 1
                ) -> dict[str, Any]:
    """``curate export --format llamafactory|verl``: write ``to``; return counts."""
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
    target = Path(to)
    name = name or (stage if subset == "all" else f"{stage}_{subset}")
    if fmt == "llamafactory":
        return export_llamafactory(store, stage, target, name=name, subset=subset,
                                   all_rows=all_rows, mode=mode, images=images,
                                   max_traces=max_traces)
    return export_verl(store, stage, target, name=name, subset=subset, all_rows=all_rows,
                       images=images)
