"""Recipes: TOML files naming the stages, the plugin for each and its options.

```toml
[run]
seed = 0
shard_size = 256

[source]                 # a stage; its kind follows from the section name
use = "synthetic"        # registered name of the class to run
n_per_family = 100       # options, validated against that class's Config

[distill]
use = "reference"
[distill.plugins.vllm-distill]   # options used only when vllm-distill runs this stage
model = "Qwen/Qwen3-VL-235B-A22B-Thinking"
```

Section names map to kinds through the table of kinds (:mod:`dualcurate.kinds`: ``source``,
``distill``, ``verify``, ``filter``, ``train``, ``judge``); other names need ``kind = "..."``.
Stages run in file order unless ``[run] stages`` lists them.

``[models]`` names each model once (a hub id or folder, or a table with ``path`` and a
``build`` step, see :mod:`dualcurate.models`); any string option ``"@NAME"`` in a stage is that
model's path (``"@@..."`` is a literal ``"@..."``).
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from dualcurate.config import renamed_hint
from dualcurate.errors import RecipeError
from dualcurate.kinds import BY_SECTION, STAGE_KINDS

#: recipe section -> stage kind (derived from :data:`dualcurate.kinds.KINDS`)
SECTION_KINDS = {section: k.name for section, k in BY_SECTION.items()}
RESERVED_STAGE_KEYS = {"use", "kind", "plugins"}
#: top-level tables that are not stages (``[sweep]``: the grid of ``curate sweep``)
RESERVED_SECTIONS = {"run", "models", "sweep"}
_MODEL_REF = re.compile(r"@([A-Za-z_][A-Za-z0-9_.-]*)")
DEFAULT_RECIPE = Path(__file__).parent / "recipes" / "default.toml"


class RunSection(BaseModel):
    """``[run]``: options of the run as a whole."""

    model_config = ConfigDict(extra="forbid")

    name: str = "run"
    seed: int = 0
    shard_size: int = 256
    executor: str = "local"
    executor_options: dict[str, Any] = {}
    cache: str | None = None
    out: str | None = None
    stages: list[str] | None = None
    #: fail instead of warn where a stage can tell a run went wrong without crashing (a
    #: source that kept too few of the rows it read); ``curate run --strict``
    strict: bool = False


@dataclass
class ModelSpec:
    """One entry of ``[models]``: a path (hub id or folder) and, optionally, how to build it
    (``build = { use = "<model builder>", ...options }``) when the folder is missing."""

    name: str
    path: str
    build: dict[str, Any] | None = None


def parse_models(raw: Any, problems: list[str]) -> dict[str, ModelSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append("[models]: must be a table of NAME = \"hub id or folder\" entries")
        return {}
    out: dict[str, ModelSpec] = {}
    for name, value in raw.items():
        if not _MODEL_REF.fullmatch(f"@{name}"):
            problems.append(f"[models] {name}: use letters, digits, _ . - in model names")
            continue
        if isinstance(value, str) and value:
            out[name] = ModelSpec(name, value)
            continue
        if not isinstance(value, dict):
            problems.append(f"[models] {name}: give a hub id or folder (a string), or a table "
                            f"with path = \"...\" and optionally build = {{ use = \"...\" }}")
            continue
        unknown = sorted(set(value) - {"path", "build"})
        path, build = value.get("path"), value.get("build")
        if unknown:
            problems.append(f"[models.{name}] {', '.join(unknown)}: unknown key(s); a model "
                            f"table takes path and build")
        if not isinstance(path, str) or not path:
            problems.append(f"[models.{name}] path: missing; the hub id or folder of the model")
            continue
        if build is not None and (not isinstance(build, dict) or not isinstance(
                build.get("use"), str) or not build.get("use")):
            problems.append(f"[models.{name}] build: a table naming the model builder, e.g. "
                            f"build = {{ use = \"synthetic-base\" }} (`curate plugins` lists "
                            f"model builders)")
            continue
        out[name] = ModelSpec(name, path, dict(build) if build is not None else None)
    return out


def substitute_models(value: Any, models: dict[str, ModelSpec], where: str,
                      problems: list[str]) -> Any:
    """``value`` with every string ``"@NAME"`` replaced by the path of model NAME
    (``"@@x"`` gives the literal ``"@x"``); unknown names are added to ``problems``."""
    if isinstance(value, dict):
        sep = " " if where.endswith("]") else "."  # "[distill]", then "[distill] engine.model"
        return {k: substitute_models(v, models, f"{where}{sep}{k}", problems)
                for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_models(v, models, where, problems) for v in value]
    if isinstance(value, str) and value.startswith("@"):
        if value.startswith("@@"):
            return value[1:]
        match = _MODEL_REF.fullmatch(value)
        if match is None:
            return value
        spec = models.get(match.group(1))
        if spec is None:
            have = ", ".join(sorted(models)) or "none"
            problems.append(f"{where}: {value!r} names no model in [models] (models: {have}); "
                            f"add {match.group(1)} = \"<hub id or folder>\" under [models], or "
                            f"write @@ for a literal @")
            return value
        return spec.path
    return value


@dataclass
class StageSpec:
    """One stage section of a recipe."""

    name: str
    kind: str
    use: str
    options: dict[str, Any] = field(default_factory=dict)
    plugin_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``--set`` overrides of this stage's options: (path below the stage, value), in order.
    set_options: list[tuple[list[str], Any]] = field(default_factory=list)
    #: the recipe's ``[models]``, for ``"@NAME"`` references in options
    models: dict[str, ModelSpec] = field(default_factory=dict)

    def options_for(self, plugin: str) -> dict[str, Any]:
        """The options ``plugin`` runs this stage with. One precedence rule: defaults <
        the stage's table < its ``[<stage>.plugins.<plugin>]`` table < ``--set``. Model
        references (``"@base"``) are replaced by the models' paths."""
        merged = copy.deepcopy({**self.options, **self.plugin_options.get(plugin, {})})
        for path, value in self.set_options:
            node = merged
            for key in path[:-1]:
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                node = node[key]
            node[path[-1]] = copy.deepcopy(value)
        problems: list[str] = []
        merged = substitute_models(merged, self.models, f"[{self.name}]", problems)
        if problems:  # caught at load time already; here only for specs built by hand
            raise RecipeError(self.name, problems)
        return merged

    def origin(self, plugin: str, key: str) -> str:
        """Where option ``key`` of this stage comes from when ``plugin`` runs it."""
        if any(path[0] == key for path, _ in self.set_options):
            return "--set"
        if key in self.plugin_options.get(plugin, {}):
            return f"[{self.name}.plugins.{plugin}]"
        if key in self.options:
            return f"[{self.name}]"
        return "default"

    def set_keys(self) -> set[str]:
        return {path[0] for path, _ in self.set_options}


@dataclass
class Recipe:
    """A parsed recipe. ``raw`` is the TOML as loaded with overrides applied."""

    run: RunSection
    stages: list[StageSpec]
    source: str = "<dict>"
    raw: dict[str, Any] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise KeyError(name)


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML value if it parses as one, else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """``--set`` items as (key path, value); malformed ones are skipped (apply_overrides
    reports them)."""
    out = []
    for item in overrides:
        if "=" not in item:
            continue
        path, value = item.split("=", 1)
        keys = [k for k in path.strip().split(".") if k]
        if len(keys) >= 2:
            out.append((keys, parse_value(value.strip())))
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected section.key=value")
            continue
        path, value = item.split("=", 1)
        keys = [k for k in path.strip().split(".") if k]
        if len(keys) < 2:
            problems.append(f"--set {item!r}: name a section and a key, e.g. run.seed=1")
            continue
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                problems.append(f"--set {item!r}: {k} is not a table")
                break
        else:
            node[keys[-1]] = parse_value(value.strip())
    if problems:
        raise RecipeError(source, problems)
    return raw


def load_recipe(path: str | os.PathLike[str] | dict[str, Any] | None = None,
                overrides: list[str] | None = None) -> Recipe:
    """Read and structurally check a recipe (TOML path or dict; None: the default recipe).
    Stage options are checked against plugin Configs later, by ``Pipeline.validate``."""
    if path is None:
        path = DEFAULT_RECIPE
    if isinstance(path, dict):
        raw, source = copy.deepcopy(path), "<dict>"
    else:
        source = str(path)
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise RecipeError(source, ["file not found; pass the path of a .toml recipe "
                                       "(see examples/)"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(source, [f"not valid TOML: {exc}; fix the syntax at that "
                                       f"line"]) from None
    raw = apply_overrides(raw, overrides or [], source)
    return recipe_from_dict(raw, source, overrides=overrides or [])


def recipe_from_dict(raw: dict[str, Any], source: str = "<dict>",
                     overrides: list[str] | None = None) -> Recipe:
    """A Recipe from a TOML-shaped dict. ``overrides`` are the ``--set`` items already applied
    to ``raw``: they are remembered per stage so that they win over per-plugin tables too."""
    problems: list[str] = []
    run_raw = raw.get("run", {})
    try:
        run = RunSection(**run_raw) if isinstance(run_raw, dict) else RunSection()
        if not isinstance(run_raw, dict):
            problems.append("[run]: must be a table")
    except ValidationError as exc:
        problems.extend(format_validation("run", exc))
        run = RunSection()
    models = parse_models(raw.get("models"), problems)
    stages: list[StageSpec] = []
    for name, section in raw.items():
        if name in RESERVED_SECTIONS:
            continue
        if not isinstance(section, dict):
            problems.append(f"{name}: top-level key {name!r} is not a stage table; stages "
                            f"are tables like [source] with use = \"...\"")
            continue
        kind = section.get("kind") or SECTION_KINDS.get(name)
        if kind is None:
            problems.append(f"[{name}]: unknown stage section; name it one of "
                            f"{', '.join(SECTION_KINDS)} or add kind = \"filter\" (etc.)")
            continue
        if kind not in STAGE_KINDS:
            problems.append(f"[{name}] kind: {kind!r} is not a stage kind; use one of "
                            f"{', '.join(STAGE_KINDS)}")
            continue
        use = section.get("use")
        if not isinstance(use, str) or not use:
            problems.append(f"[{name}] use: missing; name the registered {kind} to run "
                            f"(`curate plugins` lists them)")
            continue
        plugin_options = section.get("plugins", {})
        if not isinstance(plugin_options, dict) or not all(
                isinstance(v, dict) for v in plugin_options.values()):
            problems.append(f"[{name}.plugins]: must hold one table per plugin name")
            plugin_options = {}
        options = {k: v for k, v in section.items() if k not in RESERVED_STAGE_KEYS}
        set_options = [(keys[1:], value) for keys, value in parse_overrides(overrides or [])
                       if keys[0] == name and keys[1] not in RESERVED_STAGE_KEYS]
        spec = StageSpec(name=name, kind=kind, use=use, options=options,
                         plugin_options=plugin_options, set_options=set_options, models=models)
        # unknown "@model" references, wherever they are written
        substitute_models({**options, **{k: v for opts in plugin_options.values()
                                         for k, v in opts.items()},
                           **{".".join(p): v for p, v in set_options}},
                          models, f"[{name}]", problems)
        stages.append(spec)
    if run.stages is not None:
        by_name = {s.name: s for s in stages}
        missing = [n for n in run.stages if n not in by_name]
        if missing:
            problems.append(f"[run] stages: {', '.join(missing)} not defined as sections")
        stages = [by_name[n] for n in run.stages if n in by_name]
    if not stages and not problems:
        problems.append("no stages: add at least a [source] section")
    if stages and stages[0].kind != "source":
        problems.append(f"[{stages[0].name}]: the first stage must be a source")
    if problems:
        raise RecipeError(source, problems)
    return Recipe(run=run, stages=stages, source=source, raw=raw, models=models)


SECRET_HINTS = ("key", "token", "secret", "password", "credential")


def format_validation(section: str, exc: ValidationError, plugin: str | None = None,
                      origin: Any = None) -> list[str]:
    """pydantic errors as `[section] key.sub: message` lines. The offending value is echoed
    only for known options whose names do not look secret, and never for unknown options (a
    key pasted into the wrong place must not be printed back). ``plugin`` names the plugin
    whose Config refused it and ``origin(key)`` where the option was set."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(section)"
        msg = err["msg"]
        echo = True
        if err["type"] == "extra_forbidden":
            where = f" (set in {origin(str(err['loc'][0]))})" if origin and err["loc"] else ""
            whose = f"plugin {plugin!r}" if plugin else "the plugin"
            hint = renamed_hint(err["loc"])
            msg = (f"unknown option for {whose}{where}{hint}" if hint else
                   f"unknown option for {whose}{where}; check the spelling against its "
                   f"Config (`curate validate RECIPE --explain` lists the options it takes)")
            echo = False
        elif err["type"] == "missing":
            msg = "required option missing"
            echo = False
        if any(h in loc.lower() for h in SECRET_HINTS):
            echo = False
        got = err.get("input")
        if echo and not isinstance(got, dict | list) and len(repr(got)) <= 80:
            msg += f" (got {got!r})"
        out.append(f"[{section}] {loc}: {msg}")
    return out
