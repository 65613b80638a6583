"""The pipeline: resolve a recipe against the plugin host, validate it, run it into a store.

Resume rules. Each stage has a signature: its plugin, class version and config (minus runtime
fields), chained with the upstream stage's signature. A rerun with the same signature skips
committed shards (map stages and sources) or the whole stage (whole-dataset stages, once done).
A changed signature hides that stage's old shards and everything downstream recomputes; model
calls still come from the request cache, so nothing already generated is paid for twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dualcurate.cache import RequestCache
from dualcurate.cache_segments import merge_segments
from dualcurate.context import StageContext
from dualcurate.errors import DualcurateError, RecipeError, StageFailed, StoreError
from dualcurate.executors import BeforeWrite, write_dataset, write_source
from dualcurate.kinds import STAGE_KINDS
from dualcurate.manifest import StageRecord, mark_downstream
from dualcurate.models import ModelBuilder, ensure_model
from dualcurate.plugins import PluginHost
from dualcurate.progress import NullProgress, StageProgress
from dualcurate.recipe import Recipe, StageSpec, check_refs, format_validation
from dualcurate.stages import DatasetStage, MapJob, MapStage, Source, Stage
from dualcurate.store import RunStore, kept

ProgressFactory = Callable[[str], StageProgress]


@dataclass
class ResolvedStage:
    """A recipe stage bound to its class and validated config."""

    name: str
    kind: str
    plugin: str
    stage: Stage


def _type_name(annotation: Any) -> str:
    name = getattr(annotation, "__name__", None)
    text = name if name and not getattr(annotation, "__args__", None) else str(annotation)
    return text.replace("typing.", "").replace("dualcurate.recipe.", "")


def _ref_class(annotation: Any) -> Any:
    """The ComponentRef subclass an option's type names (``EngineRef``, ``EngineRef | None``,
    ``list[VerifierRef]``), or None."""
    import typing

    from dualcurate.recipe import ComponentRef

    if isinstance(annotation, type) and issubclass(annotation, ComponentRef):
        return annotation
    for arg in typing.get_args(annotation):
        found = _ref_class(arg)
        if found is not None:
            return found
    return None


class Pipeline:
    """Runs a recipe. ``selected`` are plugin (entry-point) names from ``--plugin``: the stage
    kinds they implement run with them, overriding the recipe's ``use``."""

    def __init__(self, recipe: Recipe, host: PluginHost | None = None,
                 selected: Sequence[str] = ()):
        self.recipe = recipe
        self.selected = list(selected)
        if host is None:  # with autoload off, host.get loads the recipe's uses on first need
            host = PluginHost(select=self.selected)
        self.host = host
        self.overrides = self._overrides()
        self._resolved: list[ResolvedStage] | None = None
        self._builders: dict[str, ModelBuilder] = {}
        #: What validation decided on the user's behalf (options --plugin dropped), to show.
        self.notes: list[str] = []
        #: stage name -> the options it runs with (after dropping), for ``explain``.
        self._options: dict[str, dict[str, Any]] = {}

    # resolution ----------------------------------------------------------------------------
    def _overrides(self) -> dict[str, str]:
        """stage name -> registered name chosen by --plugin. A plugin replaces the one stage
        of the kind it implements; where the recipe has several stages of that kind, only a
        stage already using one of the plugin's names matches, else it is ambiguous."""
        chosen: dict[str, str] = {}
        for plugin in self.selected:
            registers = self.host.stage_kinds_of(plugin)
            stage_kinds = {k: v for k, v in registers.items() if k in STAGE_KINDS}
            for kind, names in stage_kinds.items():
                name = plugin if plugin in names else (names[0] if len(names) == 1 else None)
                if name is None:
                    raise DualcurateError(
                        f"plugin {plugin!r} registers several {kind}s ({', '.join(names)}); "
                        f"choose one in the recipe's use = \"...\" instead of --plugin")
                specs = [s for s in self.recipe.stages if s.kind == kind]
                if not specs:
                    raise DualcurateError(
                        f"plugin {plugin!r} implements the {kind} stage but recipe "
                        f"{self.recipe.source} has no {kind} stage; add one or drop the plugin")
                if any(s.use in names for s in specs):
                    continue  # the recipe already runs this plugin's stage where it wants it
                if len(specs) > 1:
                    raise DualcurateError(
                        f"plugin {plugin!r} implements the {kind} stage but recipe "
                        f"{self.recipe.source} has {len(specs)} {kind} stages "
                        f"({', '.join(s.name for s in specs)}); set use = \"{name}\" in the "
                        f"one you mean instead of --plugin")
                chosen[specs[0].name] = name
            if "executor" in registers:
                self.recipe.run.executor = registers["executor"][0]
        return chosen

    def plugin_for(self, spec: StageSpec) -> str:
        return self.overrides.get(spec.name, spec.use)

    def validate(self) -> list[ResolvedStage]:
        """Bind every stage to its class and validate every config; raise one RecipeError
        listing all problems (with their TOML paths)."""
        if self._resolved is not None:
            return self._resolved
        problems: list[str] = []
        resolved: list[ResolvedStage] = []
        self.notes = []
        for spec in self.recipe.stages:
            plugin = self.plugin_for(spec)
            try:
                cls = self.host.get(spec.kind, plugin)
            except DualcurateError as exc:
                problems.append(f"[{spec.name}] use: {exc}")
                continue
            options = spec.options_for(plugin)
            if plugin != spec.use:
                # --plugin swapped the recipe's plugin: the stage table's options were written
                # for the recipe's; keep those the new plugin takes, drop (and say) the rest.
                fields = set(getattr(cls.Config, "model_fields", {}))
                own = set(spec.plugin_options.get(plugin, {})) | spec.set_keys()
                dropped = sorted(k for k in options if k not in fields and k not in own)
                for key in dropped:
                    options.pop(key)
                if dropped:
                    self.notes.append(
                        f"[{spec.name}] --plugin {plugin} runs this stage instead of "
                        f"{spec.use}; dropped the recipe's options {plugin} does not take: "
                        f"{', '.join(dropped)} (put options for {plugin} in "
                        f"[{spec.name}.plugins.{plugin}])")
            self._options[spec.name] = options
            try:
                stage = cls(options)
            except ValidationError as exc:
                problems.extend(format_validation(
                    spec.name, exc, plugin, lambda k, spec=spec, plugin=plugin:
                    spec.origin(plugin, k)))
                continue
            problems.extend(f"[{spec.name}] {p}" for p in check_refs(stage.config, self.host))
            problems.extend(f"[{spec.name}] {p}" for p in stage.preflight(self.host))
            resolved.append(ResolvedStage(spec.name, spec.kind, plugin, stage))
        self._builders = self._validate_models(problems)
        executor = self.recipe.run.executor
        try:
            executor_cls = self.host.get("executor", executor)
        except DualcurateError as exc:
            problems.append(f"[run] executor: {exc}")
        else:  # its options now, not when the first map stage starts
            try:
                executor_cls.Config(**self.recipe.run.executor_options)
            except ValidationError as exc:
                problems.extend(
                    line.replace("[run.executor_options] ", "[run] executor_options.", 1)
                    for line in format_validation("run.executor_options", exc, executor))
        if len(resolved) == len(self.recipe.stages):
            problems.extend(self._check_chain(resolved))
        if problems:
            raise RecipeError(self.recipe.source, problems)
        self._resolved = resolved
        return resolved

    def _validate_models(self, problems: list[str]) -> dict[str, ModelBuilder]:
        """The builders of the recipe's ``[models]`` that have a ``build`` step."""
        builders: dict[str, ModelBuilder] = {}
        for name, spec in self.recipe.models.items():
            if spec.build is None:
                continue
            where = f"[models.{name}] build"
            options = {k: v for k, v in spec.build.items() if k != "use"}
            try:
                cls = self.host.get("model_builder", spec.build["use"])
            except DualcurateError as exc:
                problems.append(f"{where}.use: {exc}")
                continue
            try:
                builder = cls(options)
            except ValidationError as exc:
                # "[models.base] build.steps: ...", as the build.use problem above reads
                table = f"[models.{name}.build] "
                for line in format_validation(f"models.{name}.build", exc, spec.build["use"]):
                    line = line.replace(f"{table}(section):", f"{where}:", 1)
                    problems.append(line.replace(table, f"{where}.", 1))
                continue
            problems.extend(f"{where} {p}" for p in builder.preflight(self.host))
            builders[name] = builder
        return builders

    def build_models(self, store: RunStore, log: Callable[[str], None] = lambda m: None,
                     ) -> dict[str, Any]:
        """Build every ``[models]`` entry with a ``build`` step whose folder is missing or was
        built with other options; what the manifest records of them."""
        self.validate()
        out: dict[str, Any] = {}
        for name, spec in self.recipe.models.items():
            record: dict[str, Any] = {"path": spec.path}
            builder = self._builders.get(name)
            if builder is not None:
                # a scratch folder for the builder, made only if it writes there ([models] is
                # reserved, so no stage shares the name)
                ctx = StageContext(stage_name=f"models.{name}",
                                   workdir=store.root / "models" / name, store=store,
                                   host=self.host, seed=self.recipe.run.seed)
                try:
                    ensure_model(name, spec.path, builder, ctx, log)
                except DualcurateError:
                    raise
                except Exception as exc:
                    raise StageFailed(
                        f"model {name} ({spec.build['use']}) failed to build: "
                        f"{type(exc).__name__}: {exc}. {spec.path} is as it was before; fix the "
                        f"cause and rerun the same command (no stage has run)") from exc
                finally:
                    ctx.close()
                record.update(builder=spec.build["use"], signature=builder.signature())
            out[name] = record
        return out

    @staticmethod
    def _check_chain(resolved: list[ResolvedStage]) -> list[str]:
        """What only the order of stages shows: a stage whose ``requires`` columns no stage
        before it provides, and each stage's own ``check_upstream`` (a trainer whose
        max_length would cut what the teacher may write, say)."""
        from dualcurate.schema import CANONICAL_SCHEMA

        problems: list[str] = []
        available = {f.name for f in CANONICAL_SCHEMA} | {"split"}
        for i, rs in enumerate(resolved):
            if rs.kind != "source":
                missing = [c for c in type(rs.stage).requires if c not in available]
                if missing:
                    producers = ", ".join(r.name for r in resolved[:i]) or "none"
                    problems.append(
                        f"[{rs.name}] ({rs.plugin}) requires column(s) {', '.join(missing)}, "
                        f"which no stage before it provides (stages before it: {producers}; "
                        f"columns available: {', '.join(sorted(available))}); add a stage "
                        f"that provides them before [{rs.name}], or move it later")
            available |= set(type(rs.stage).provides)
            problems.extend(f"[{rs.name}] {p}" for p in
                            rs.stage.check_upstream([r.stage for r in resolved[:i]]))
        return problems

    def signatures(self) -> list[tuple[ResolvedStage, str]]:
        """Every stage with its signature, in run order: its plugin, its own signature
        (:meth:`Stage.signature`) and the run seed, chained with the stage before it. Two
        runs whose stage has the same signature compute the same rows (what ``curate sweep``
        shares); call it after :meth:`build_models`, as models are fingerprinted by content."""
        out: list[tuple[ResolvedStage, str]] = []
        upstream = ""
        for rs in self.validate():
            # the run seed is part of it: stages without their own seed use it
            upstream = hashlib.sha256(f"{upstream}|{rs.plugin}|{rs.stage.signature()}|"
                                      f"{self.recipe.run.seed}".encode()).hexdigest()[:16]
            out.append((rs, upstream))
        return out

    def explain(self) -> list[dict[str, Any]]:
        """Every stage's effective options and where each comes from: ``default``, the stage
        table ``[stage]``, its plugin table ``[stage.plugins.NAME]`` or ``--set``."""
        out = []
        for rs in self.validate():
            spec = self.recipe.stage(rs.name)
            values = rs.stage.config.model_dump(mode="json")
            runtime = set(type(rs.stage.config).runtime_fields)
            options = [{"option": key, "value": value,
                        "origin": spec.origin(rs.plugin, key)
                        if key in self._options.get(rs.name, {}) else "default",
                        "runtime": key in runtime}
                       for key, value in values.items()]
            out.append({"stage": rs.name, "kind": rs.kind, "use": rs.plugin,
                        "chosen_by": "--plugin" if rs.plugin != spec.use else "use",
                        "options": options})
        return out

    def component_options(self) -> list[dict[str, Any]]:
        """The options every component the recipe names takes, read from their Configs,
        whether or not the recipe validates: each stage's component, and the components its
        options name (``engine = { use = "hf", ... }``). Each entry: ``stage``, ``kind``,
        ``use`` and ``options`` (``option``, ``type``, ``default``, ``required``,
        ``runtime``). What ``curate validate --explain`` prints when the recipe has
        problems. A name nothing registers is left out (the problems name it)."""
        out: list[dict[str, Any]] = []

        def describe(stage: str, kind: str, use: str) -> type | None:
            try:
                cls = self.host.get(kind, use)
            except DualcurateError:
                return None
            config_cls = getattr(cls, "Config", None)
            fields = getattr(config_cls, "model_fields", {})
            runtime = set(getattr(config_cls, "runtime_fields", ()))
            options = []
            for key, field in fields.items():
                required = field.is_required()
                default = None if required else field.get_default(call_default_factory=True)
                options.append({"option": key, "type": _type_name(field.annotation),
                                "default": default, "required": required,
                                "runtime": key in runtime})
            out.append({"stage": stage, "kind": kind, "use": use, "options": options})
            return cls

        for spec in self.recipe.stages:
            use = self.plugin_for(spec)
            cls = describe(spec.name, spec.kind, use)
            fields = getattr(getattr(cls, "Config", None), "model_fields", {})
            options = spec.options_for(use)
            for key, field in fields.items():
                ref_cls = _ref_class(field.annotation)
                value = options.get(key, None if field.is_required() else field.get_default(
                    call_default_factory=True))
                values = value if isinstance(value, list) else [value]
                for item in values if ref_cls is not None else ():
                    name = item if isinstance(item, str) else \
                        item.get("use") if isinstance(item, dict) else \
                        getattr(item, "use", None)
                    if isinstance(name, str) and name:
                        describe(f"{spec.name}.{key}", ref_cls.kind, name)
        return out

    def resolved_recipe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": self.recipe.run.model_dump()}
        for r in self.validate():
            out[r.name] = {"kind": r.kind, "use": r.plugin,
                           **r.stage.config.model_dump(mode="json")}
        return out

    # running -------------------------------------------------------------------------------
    def run(self, out: str | Path | None = None,
            progress_factory: ProgressFactory | None = None,
            log: Callable[[str], None] | None = None) -> RunStore:
        """Run (or resume) every stage into the run directory ``out``."""
        stages = self.validate()
        out = out or self.recipe.run.out or f"runs/{self.recipe.run.name}"
        store = RunStore(out)
        with store.lock():
            store.manifest = store._load_manifest()  # as the previous holder left it
            return self._run_locked(stages, store, progress_factory, log)

    def _run_locked(self, stages: list[ResolvedStage], store: RunStore,
                    progress_factory: ProgressFactory | None,
                    log: Callable[[str], None] | None) -> RunStore:
        self._check_compatible(store)
        manifest = store.manifest
        manifest["recipe"] = self.resolved_recipe()
        manifest["recipe_source"] = self.recipe.source
        manifest["plugins"] = self.host.loaded_versions()
        manifest["status"] = "running"
        manifest["shard_size"] = self.recipe.run.shard_size
        if self.recipe.models:
            manifest["models"] = self.build_models(store, log or (lambda m: None))
        if self.notes:
            manifest["notes"] = list(self.notes)
        else:
            manifest.pop("notes", None)
        store.save_manifest()
        cache_path = Path(self.recipe.run.cache) if self.recipe.run.cache else store.root / "cache.sqlite"
        cache = RequestCache(cache_path)
        # answers that distributed workers of a killed run left in their cache segments
        # (docs/scale-out.md); segments still being written are skipped
        merge_segments(cache)
        progress_factory = progress_factory or (lambda name: NullProgress())
        log = log or (lambda msg: None)
        upstream: str | None = None
        order = [rs.name for rs in stages]
        try:
            for rs, sig in self.signatures():
                record = StageRecord(store, rs.name)
                if not record.prepare(sig, rs.plugin, rs.kind, isinstance(rs.stage, MapStage),
                                      log):
                    upstream = record.rows_stage
                    continue
                ctx = StageContext(stage_name=rs.name, workdir=store.artifacts_dir(rs.name),
                                   store=store, cache=cache, host=self.host,
                                   seed=self.recipe.run.seed, strict=self.recipe.run.strict,
                                   progress=progress_factory(rs.name))
                store.sweep_temporary(rs.name)  # what a killed run left half-written
                with record.running():
                    try:
                        upstream = self._run_stage(rs, ctx, store, record.data, upstream,
                                                   partial(mark_downstream, store, order,
                                                           rs.name))
                        ctx.progress.finish()
                    finally:
                        ctx.progress.stop()
                        ctx.close()
                record.done(upstream)
            manifest["status"] = "done"
        except BaseException:
            manifest["status"] = "failed"
            raise
        finally:
            store.save_manifest()
            cache.close()
        return store

    def _check_compatible(self, store: RunStore) -> None:
        old = store.manifest.get("shard_size")
        new = self.recipe.run.shard_size
        if old is not None and old != new and any(
                store.finished_shards(s["name"]) for s in store.manifest["stages"]):
            raise StoreError(
                f"run {store.root}: started with shard_size={old}, this command asks for "
                f"{new}. Changing it would re-cut committed shards. Rerun with --set "
                f"run.shard_size={old}, or start a new run with another --out.")

    def _run_stage(self, rs: ResolvedStage, ctx: StageContext, store: RunStore,
                   rec: dict[str, Any], upstream: str | None, before_write: BeforeWrite) -> str:
        """Run one stage that has work to do; returns the stage whose shards hold its rows."""
        stage = rs.stage
        size = self.recipe.run.shard_size
        if isinstance(stage, Source):
            rec["rows_in"], rec["rows_out"] = write_source(stage, ctx, store, size, before_write)
            return rs.name
        if upstream is None:
            raise DualcurateError(f"[{rs.name}]: a {rs.kind} stage needs a source before it")
        if isinstance(stage, MapStage):
            todo_all = store.finished_shards(upstream)
            done = set(store.finished_shards(rs.name))
            todo = [i for i in todo_all if i not in done]
            rec["rows_in"] = sum(kept(store.read_shard(upstream, i)).num_rows for i in todo_all)
            ctx.progress.start(rec["rows_in"], unit="rows")
            ctx.progress.advance(sum(kept(store.read_shard(upstream, i)).num_rows for i in done))
            executor = self.host.get("executor", self.recipe.run.executor)(
                self.recipe.run.executor_options)
            retry = set(rec.get("retry_shards", [])) - set(todo)
            if todo:
                before_write(todo)
                job = MapJob(stage_cls=type(stage),
                             stage_config=stage.config.model_dump(mode="python"),
                             stage_name=rs.name, upstream=upstream, shards=todo,
                             run_dir=str(store.root), cache=str(ctx.cache.path)
                             if ctx.cache is not None else None, seed=self.recipe.run.seed)
                for shard in executor.run_map(job, stage, ctx):
                    ctx.progress.advance(shard.rows_in)
                    if shard.failed:
                        retry.add(shard.index)
                    rec["retry_shards"] = sorted(retry)
                report = stage.finish(ctx)
                if report:
                    rec["report"] = report
            rec["retry_shards"] = sorted(retry)
            rec["rows_out"] = sum(kept(t).num_rows for t in store.iter_tables(rs.name))
            return rs.name
        if isinstance(stage, DatasetStage):
            dataset = store.dataset(upstream)
            if "keep" in dataset.column_names:
                dataset = dataset.filter(lambda k: k is not False, input_columns="keep")
            rec["rows_in"] = len(dataset)
            ctx.progress.start(len(dataset), unit="rows")
            stage.setup(ctx)
            try:
                result = stage.run(dataset, ctx)
            finally:
                stage.teardown()
            rec["artifacts"] = result.artifacts
            rec["report"] = result.report
            if result.dataset is None:
                rec["rows_out"] = rec["rows_in"]
                return upstream
            write_dataset(store, rs.name, result.dataset, size, type(stage).column_types,
                          before_write)
            rec["rows_out"] = sum(kept(t).num_rows for t in store.iter_tables(rs.name))
            return rs.name
        raise DualcurateError(f"[{rs.name}]: {type(stage).__name__} is neither a Source, a "
                              f"MapStage nor a DatasetStage")
