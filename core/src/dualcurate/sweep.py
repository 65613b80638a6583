"""Sweeps: a grid of recipe variants, each a normal run directory, sharing what they have in
common, compared in one report (``curate sweep``, docs/sweeps.md).

A sweep runs one recipe once per point of a grid of overrides (``--grid SECTION.KEY=[V1, V2]``,
several forming their product, or a ``[sweep]`` table in the recipe). Each variant is a run
directory ``DIR/<name>`` that ``curate export``, ``inspect`` and ``report`` read as any other.

What makes it cheap:

* Before a variant runs, its stages' signatures are computed (``Pipeline.signatures``). A
  stage whose signature equals a stage another run under ``DIR`` finished is not computed
  again: the variant's stage folder is made of hard links to that run's files (shards and
  artifacts; the image store likewise), and its manifest record says ``shared_from``.
  Nothing is copied, and nothing a variant writes can change another's: files in a run are
  only ever replaced (``os.replace``) or unlinked, never written in place, and a variant that
  must recompute a shared stage moves the linked folder aside first (``Pipeline``).
* Every variant uses one request cache, ``DIR/cache.sqlite`` (unless ``[run] cache`` names
  one): a variant asking for 8 samples per question where another asked for 4 pays for the
  4 new ones.

``DIR/sweep.json`` lists the variants, with which stages each computed or reused and its
metrics; ``DIR/report.html`` and ``DIR/report.md`` compare them (:mod:`dualcurate.sweep_report`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualcurate.errors import DualcurateError, RecipeError
from dualcurate.recipe import DEFAULT_RECIPE, RESERVED_SECTIONS, load_recipe
from dualcurate.store import RunStore, atomic_write_json

if TYPE_CHECKING:
    from dualcurate.pipeline import Pipeline, ProgressFactory
    from dualcurate.plugins import PluginHost
    from dualcurate.report_sections import ReportSection

__all__ = ["Sweep", "SweepVariant", "parse_grid", "plan_sweep", "toml_value", "variant_name"]

SWEEP_FILE = "sweep.json"
#: ``[run]`` keys a sweep sets itself: a grid over them means nothing
_NOT_SWEPT = {"run.out", "run.cache", "run.name"}
#: the per-group accuracies the report plots against the swept values (the Dual Tuning
#: section's data: the student trained on the variant's rows, in both modes)
ACCURACY_KEYS = ("DT_S", "DT_L")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# grid ---------------------------------------------------------------------------------------
def toml_value(value: Any) -> str:
    """``value`` written as a TOML value (what ``--set`` parses back to ``value``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _basic_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{k if _BARE_KEY.match(str(k)) else _basic_string(str(k))} = {toml_value(v)}"
                 for k, v in value.items()]
        return "{" + ", ".join(items) + "}"
    raise DualcurateError(f"sweep value {value!r}: not a TOML value (use strings, numbers, "
                          f"booleans, lists and tables)")


def _basic_string(text: str) -> str:
    """A TOML basic string (JSON's escapes, plus DEL and lone surrogates escaped)."""
    out = json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
    return re.sub(r"[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", out)


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``--grid SECTION.KEY=[V1, V2, ...]`` items as (key, values); values are TOML, as with
    ``--set``. A malformed item is a RecipeError naming it."""
    out: list[tuple[str, list[Any]]] = []
    problems: list[str] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or len([k for k in key.split(".") if k]) < 2:
            problems.append(f"--grid {item!r}: expected SECTION.KEY=[V1, V2, ...], e.g. "
                            f"--grid distill.samples_per_question=[1, 4]")
            continue
        try:
            values = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"--grid {item!r}: the values are not a TOML list ({exc}); quote "
                            f"strings: --grid 'filter.keep=[\"pass_rate < 1\", \"true\"]'")
            continue
        if not isinstance(values, list) or not values:
            problems.append(f"--grid {item!r}: give a non-empty TOML list of values, e.g. "
                            f"{key}=[1, 4]")
            continue
        out.append((key, values))
    if problems:
        raise RecipeError("--grid", problems)
    return out


def recipe_grid(raw: dict[str, Any], source: str) -> list[tuple[str, list[Any]]]:
    """The grid of a recipe's ``[sweep]`` table: ``grid = { "distill.samples_per_question" =
    [1, 4] }`` (or ``[sweep.grid]`` with dotted keys); every key ends in a list of values."""
    table = raw.get("sweep")
    if table is None:
        return []
    problems: list[str] = []
    if not isinstance(table, dict) or set(table) - {"grid"}:
        unknown = sorted(set(table) - {"grid"}) if isinstance(table, dict) else []
        problems.append(f"[sweep] {', '.join(unknown) or '(section)'}: a [sweep] table holds "
                        f"grid = {{ \"SECTION.KEY\" = [V1, V2] }} only")
        raise RecipeError(source, problems)
    out: list[tuple[str, list[Any]]] = []

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, list):
            key = ".".join(path)
            if len(path) < 2 or not node:
                problems.append(f"[sweep] grid.{key}: give SECTION.KEY = [V1, V2, ...]")
            else:
                out.append((key, node))
            return
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, [*path, *[p for p in str(k).split(".") if p]])
            return
        problems.append(f"[sweep] grid.{'.'.join(path)}: expected a list of values")

    walk(table.get("grid", {}), [])
    if problems:
        raise RecipeError(source, problems)
    return out


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else toml_value(value)
    for op, word in (("<=", "le"), (">=", "ge"), ("==", "eq"), ("!=", "ne"), ("<", "lt"),
                     (">", "gt")):
        text = text.replace(op, f"-{word}-")
    return re.sub(r"[^A-Za-z0-9._+]+", "-", text).strip("-.")


def variant_name(overrides: dict[str, Any]) -> str:
    """A variant's directory name from its overrides: ``samples_per_question-4``, the keys'
    last parts (whole keys where two share one) and the values, joined by ``__``."""
    lasts = Counter(k.rsplit(".", 1)[-1] for k in overrides)
    parts = []
    for key, value in overrides.items():
        label = key.rsplit(".", 1)[-1] if lasts[key.rsplit(".", 1)[-1]] == 1 else key
        slug = _slug(value)
        if not slug or len(slug) > 40:
            digest = hashlib.sha256(toml_value(value).encode()).hexdigest()[:8]
            slug = f"{slug[:31].rstrip('-.')}-{digest}".lstrip("-")
        parts.append(f"{label}-{slug}")
    return "__".join(parts) or "base"


@dataclass
class SweepVariant:
    """One point of the grid: its name (its directory under the sweep's), the grid values it
    takes and the ``--set`` items that give them."""

    name: str
    overrides: dict[str, Any]

    @property
    def sets(self) -> list[str]:
        return [f"{k}={toml_value(v)}" for k, v in self.overrides.items()]


@dataclass
class SweepPlan:
    recipe: str | None
    grid: list[tuple[str, list[Any]]]
    sets: list[str]
    variants: list[SweepVariant]
    shared_cache: bool = True
    notes: list[str] = field(default_factory=list)


def plan_sweep(recipe: str | None, grid: Sequence[str] = (), sets: Sequence[str] = (),
               host: PluginHost | None = None, selected: Sequence[str] = ()) -> SweepPlan:
    """The variants of a sweep, every one validated as ``curate validate`` would: a grid key
    that no stage (or ``[run]``, ``[models]``) has, or a value a stage refuses, fails here,
    before anything runs, naming the key."""
    from dualcurate.pipeline import Pipeline

    source = str(recipe) if recipe is not None else str(DEFAULT_RECIPE)
    base = load_recipe(recipe, list(sets))  # the recipe as every variant starts from it
    keys: dict[str, list[Any]] = dict(recipe_grid(base.raw, source))
    keys.update(dict(parse_grid(grid)))  # --grid wins over [sweep] for the same key
    if not keys:
        raise RecipeError(source, ["nothing to sweep: give --grid SECTION.KEY=[V1, V2] or a "
                                   "[sweep] table with grid = { \"SECTION.KEY\" = [V1, V2] }"])
    stage_names = [s.name for s in base.stages]
    problems: list[str] = []
    for key in keys:
        section = key.split(".", 1)[0]
        if key in _NOT_SWEPT:
            problems.append(f"grid key {key}: the sweep sets it for every variant; sweep "
                            f"another key")
        elif section == "sweep" or (section not in stage_names
                                    and section not in RESERVED_SECTIONS):
            problems.append(
                f"grid key {key}: no stage [{section}] runs in this recipe (stages: "
                f"{', '.join(stage_names)}); a grid key is SECTION.KEY of one of them, of "
                f"[run] or of [models]")
    if problems:
        raise RecipeError(source, problems)
    variants: list[SweepVariant] = []
    seen: set[str] = set()
    for values in itertools.product(*keys.values()):
        overrides = dict(zip(keys, values, strict=True))
        name = variant_name(overrides)
        if name in seen:
            digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str)
                                    .encode()).hexdigest()[:8]
            name = f"{name}-{digest}"
        seen.add(name)
        variants.append(SweepVariant(name, overrides))
    shared_cache = not base.run.cache
    for variant in variants:
        pipeline = Pipeline(load_recipe(recipe, [*sets, *variant.sets]), host=host,
                            selected=selected)
        try:
            pipeline.validate()
        except RecipeError as exc:
            keys_named = ", ".join(f"{k}={toml_value(v)}" for k, v in variant.overrides.items())
            problems.extend(f"variant {variant.name} ({keys_named}): {p}" for p in exc.problems)
            continue
    if problems:
        raise RecipeError(source, problems)
    return SweepPlan(recipe=recipe, grid=list(keys.items()), sets=list(sets),
                     variants=variants, shared_cache=shared_cache)


# sharing ------------------------------------------------------------------------------------
def _link_tree(src: Path, dst: Path) -> int:
    """Make ``dst`` a tree of hard links to ``src``'s files (``.tmp-*`` left out); where the
    filesystem refuses a link, the file is copied. Returns how many were copied."""
    copied = 0
    for folder, dirs, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        dirs[:] = [d for d in dirs if not d.startswith(".tmp-")]
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.startswith(".tmp-") or name == ".lock":
                continue
            target = dst / rel / name
            if target.exists():
                continue
            try:
                os.link(Path(folder) / name, target)
            except OSError:
                shutil.copy2(Path(folder) / name, target)
                copied += 1
    return copied


def _rewrite(value: Any, old: list[str], new: str) -> Any:
    if isinstance(value, dict):
        return {k: _rewrite(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, old, new) for v in value]
    if isinstance(value, str):
        for prefix in old:
            if value == prefix or value.startswith(prefix + os.sep):
                return new + value[len(prefix):]
    return value


@dataclass
class _Done:
    root: Path
    record: dict[str, Any]


class Sweep:
    """Runs a :class:`SweepPlan` into ``out``: each variant in turn, sharing stages."""

    def __init__(self, plan: SweepPlan, out: str | Path, host: PluginHost | None = None,
                 selected: Sequence[str] = ()):
        self.plan = plan
        self.out = Path(out)
        self.host = host
        self.selected = list(selected)
        self.entries: list[dict[str, Any]] = []

    # the stages every run under out has finished, by signature
    def _finished(self) -> dict[str, _Done]:
        found: dict[str, _Done] = {}
        if not self.out.is_dir():
            return found
        for manifest in sorted(self.out.glob("*/manifest.json")):
            try:
                data = json.loads(manifest.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            for rec in data.get("stages") or []:
                sig = rec.get("signature")
                if not sig or rec.get("status") != "done" or rec.get("retry_shards") or \
                        rec.get("stale_shards") or not (manifest.parent / rec["name"]).is_dir():
                    continue
                have = found.get(sig)
                if have is None or (have.record.get("shared_from") and
                                    not rec.get("shared_from")):
                    found[sig] = _Done(manifest.parent, rec)
        return found

    def pipeline(self, variant: SweepVariant) -> Pipeline:
        from dualcurate.pipeline import Pipeline

        sets = [*self.plan.sets, *variant.sets]
        if self.plan.shared_cache:
            sets.append(f"run.cache={toml_value(str(self.out / 'cache.sqlite'))}")
        return Pipeline(load_recipe(self.plan.recipe, sets), host=self.host,
                        selected=self.selected)

    def share(self, pipeline: Pipeline, store: RunStore,
              log: Callable[[str], None]) -> list[str]:
        """Point the variant's stages that another run under the sweep finished with the same
        signature at that run's files (hard links); the names of those stages."""
        finished = self._finished()
        shared: list[str] = []
        order = [rs.name for rs in pipeline.validate()]
        for rs, sig in pipeline.signatures():
            rec = store.stage_record(rs.name)
            if rec.get("signature") == sig and rec.get("status") == "done":
                if rec.get("shared_from"):
                    shared.append(rs.name)
                continue  # this variant has it already (a resumed sweep)
            done = finished.get(sig)
            if done is None or done.root.resolve() == store.root.resolve():
                break  # this stage and everything after it differ: the variant computes them
            source_root = done.root
            origin = done.record.get("shared_from")
            owner = (done.root / origin).resolve().parent if origin else done.root
            store.clear_stage(rs.name)  # what this variant had of it is stale
            tmp = store.root / f".tmp-share-{rs.name}-{os.getpid()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            copied = _link_tree(source_root / rs.name, tmp)
            os.replace(tmp, store.stage_dir(rs.name))
            if (source_root / "images").is_dir():
                copied += _link_tree(source_root / "images", store.root / "images")
            new = copy.deepcopy(done.record)
            prefixes = sorted({str(source_root / rs.name),
                               str((source_root / rs.name).resolve())}, key=len, reverse=True)
            new = _rewrite(new, prefixes, str(store.root / rs.name))
            new["shared_from"] = os.path.relpath(owner / rs.name, store.root)
            new["seconds"] = 0.0
            rec.clear()
            rec.update(new)
            shared.append(rs.name)
            if copied:
                log(f"{rs.name}: {copied} file(s) copied where the filesystem refused a hard "
                    f"link")
            log(f"{rs.name}: same signature as {new['shared_from']}; reused, not recomputed")
        # stage records in the pipeline's order (a resumed variant may have more)
        store.manifest["stages"].sort(
            key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
        store.save_manifest()
        return shared

    def run(self, progress_factory: ProgressFactory | None = None,
            log: Callable[[str], None] | None = None,
            on_variant: Callable[[SweepVariant, int, int], None] | None = None,
            ) -> list[dict[str, Any]]:
        """Run (or resume) every variant, one after another; write ``sweep.json`` after
        each; return its entries."""
        log = log or (lambda m: None)
        self.out.mkdir(parents=True, exist_ok=True)
        self.entries = [self._entry(v) for v in self.plan.variants]
        self.write_index()
        for i, variant in enumerate(self.plan.variants):
            if on_variant is not None:
                on_variant(variant, i, len(self.plan.variants))
            pipeline = self.pipeline(variant)
            pipeline.validate()
            store = RunStore(self.out / variant.name)
            with store.lock():
                store.manifest = store._load_manifest()
                pipeline.build_models(store, log)
                self.share(pipeline, store, log)
            try:
                pipeline.run(store.root, progress_factory=progress_factory, log=log)
            finally:  # killed or failed too: sweep.json says how far it got
                self.entries[i] = self._entry(variant)
                self.write_index()
        return self.entries

    def _entry(self, variant: SweepVariant) -> dict[str, Any]:
        root = self.out / variant.name
        entry: dict[str, Any] = {"name": variant.name, "overrides": variant.overrides,
                                 "run": variant.name, "status": "pending", "stages": {},
                                 "metrics": {}}
        if (root / "manifest.json").is_file():
            store = RunStore(root, create=False)
            entry["status"] = store.manifest.get("status", "?")
            entry["stages"] = {r["name"]: "reused" if r.get("shared_from") else "computed"
                               for r in store.manifest.get("stages") or []
                               if r.get("status") == "done"}
            if entry["status"] == "done":
                entry["metrics"] = variant_metrics(root, self.host)[0]
        return entry

    def write_index(self) -> Path:
        path = self.out / SWEEP_FILE
        atomic_write_json(path, {
            "recipe": str(self.plan.recipe) if self.plan.recipe else "(default recipe)",
            "grid": {k: v for k, v in self.plan.grid},
            "sets": self.plan.sets,
            "cache": str(self.out / "cache.sqlite") if self.plan.shared_cache else None,
            "variants": self.entries})
        return path


# metrics ------------------------------------------------------------------------------------
def variant_metrics(run_dir: str | Path, host: PluginHost | None = None,
                    ) -> tuple[dict[str, Any], list[ReportSection]]:
    """What a sweep compares of one run: rows out per stage, the seconds it spent (shared
    stages cost nothing), the verification rate (overall and per domain), each group's
    accuracies from the plugin sections' data (``ACCURACY_KEYS``), and every plugin
    section's summary table; with the sections themselves."""
    from dualcurate.report import run_sections
    from dualcurate.report_sections import RunView

    view = RunView(run_dir)
    metrics: dict[str, Any] = {
        "rows": {r["name"]: r.get("rows_out", 0) for r in view.stages},
        "seconds": round(sum(float(r.get("seconds") or 0.0) for r in view.stages), 1),
    }
    verifiers = view.stages_of_kind("verifier")
    if verifiers:
        total: Counter = Counter()
        by_domain: dict[str, Counter] = {}
        for row in view.rows(verifiers[-1]["name"], columns=["domain", "traces"]):
            counts = by_domain.setdefault(str(row.get("domain") or "(none)"), Counter())
            for trace in row.get("traces") or []:
                ok = trace.get("verdict") == "correct" and not trace.get("error")
                for c in (total, counts):
                    c["traces"] += 1
                    c["correct"] += int(ok)
        metrics["verified"] = {
            "traces": total["traces"], "correct": total["correct"],
            "rate": round(total["correct"] / total["traces"], 4) if total["traces"] else None,
            "by_domain": {d: round(c["correct"] / c["traces"], 4) if c["traces"] else None
                          for d, c in sorted(by_domain.items())}}
    sections = run_sections(view, host)
    accuracy: dict[str, dict[str, float]] = {}
    summaries: dict[str, Any] = {}
    for section in sections:
        for group in (section.data or {}).get("groups") or []:
            if isinstance(group, dict) and "group" in group:
                values = {k: group[k] for k in ACCURACY_KEYS
                          if isinstance(group.get(k), int | float)}
                if values:
                    accuracy[str(group["group"])] = values
        if section.summary is not None:
            summaries[section.title] = {"columns": list(section.summary.columns),
                                        "rows": [list(r) for r in section.summary.rows]}
    if accuracy:
        metrics["accuracy"] = accuracy
    if summaries:
        metrics["sections"] = summaries
    return metrics, sections

