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

The typed schema a stage's options are validated against lives here too: the pydantic base
every ``Config`` derives from (:class:`StageConfig`), the references to components named
inside options (:class:`EngineRef`, :class:`TrainerRef`, :class:`VerifierRef`, resolved and
checked by :func:`check_refs`), and what of a config enters a cache signature (its values
minus runtime-only fields, the versions of the code behind it, and fingerprints of the files
and models it names).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from dualcurate.errors import RecipeError
from dualcurate.fingerprint import model_fingerprint, path_fingerprint
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


# the typed schema: stage configs, component references, signatures ---------------------------

class StageConfig(BaseModel):
    """Base for stage configs: unknown keys are errors, so a misspelt option fails validation.

    Fields listed in ``runtime_fields`` (batch sizes, concurrency, devices) do not change a
    stage's output and are left out of its cache signature.
    """

    model_config = ConfigDict(extra="forbid")
    runtime_fields: ClassVar[frozenset[str]] = frozenset()
    #: Options naming files the stage reads (templates, prompt files): the files' contents
    #: enter the signature, so editing one in place recomputes the stage. Fields named
    #: ``template`` or ``*_template`` whose value is an existing file count without listing.
    file_fields: ClassVar[frozenset[str]] = frozenset()
    #: Options naming a model (hub id or local folder), or engine options holding ``model``
    #: (and ``revision``): the model's fingerprint enters the signature, so a model retrained
    #: in the same folder recomputes the stage. ``model``, ``base_model`` and ``*_model``
    #: count without listing (an engine reference's ``model`` always counts).
    weights_fields: ClassVar[frozenset[str]] = frozenset()


def coerce_config(config_cls: type[BaseModel], config: BaseModel | dict[str, Any] | None,
                  overrides: dict[str, Any]) -> BaseModel:
    """A component's config from what its constructor got (stages, engines, executors): a
    Config instance (a copy with ``overrides`` set, when given), a dict of options validated
    with ``overrides`` over it, or None (``overrides`` alone)."""
    if isinstance(config, BaseModel):
        return config.model_copy(update=overrides) if overrides else config
    return config_cls(**{**(config or {}), **overrides})


@functools.cache
def _module_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


@functools.cache
def _dist_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@functools.cache
def _editable(dist: str) -> bool:
    """Whether ``dist`` is installed in editable mode (``pip install -e``, PEP 610)."""
    try:
        text = md.distribution(dist).read_text("direct_url.json")
    except md.PackageNotFoundError:
        return False
    try:
        return bool(json.loads(text or "{}").get("dir_info", {}).get("editable"))
    except (json.JSONDecodeError, AttributeError):
        return False


def source_hash(roots: list[Path]) -> str:
    """A hash of every file under ``roots`` (package folders or single modules) by relative
    path and content; bytecode caches are left out."""
    digest = hashlib.sha256()
    for root in roots:
        files = [root] if root.is_file() else sorted(
            f for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts
            and f.suffix not in (".pyc", ".pyo"))
        for file in files:
            rel = file.name if file == root else file.relative_to(root).as_posix()
            digest.update(f"{root.name}/{rel}\0".encode())
            digest.update(file.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def _editable_source(dist: str) -> str | None:
    """The hash of an editable distribution's source files (its version alone says nothing
    while its code is edited in place); None for a regular install."""
    if not _editable(dist):
        return None
    roots: list[Path] = []
    for top in sorted(t for t, ds in _module_distributions().items() if dist in ds):
        spec = importlib.util.find_spec(top)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            roots.extend(Path(p) for p in spec.submodule_search_locations)
        elif spec.origin:
            roots.append(Path(spec.origin))
    return source_hash(roots) if roots else None


def code_versions(cls: type) -> dict[str, str | None]:
    """Distribution -> version of the code behind a stage or component class (an engine, a
    trainer, a verifier): the distribution that ships its module and its
    ``code_dependencies`` (if it declares any). An editable install's version carries a hash
    of its source files (``0.1.0+src.3f2a...``), so editing a plugin in place recomputes the
    stages it runs, as a new release would."""
    top = cls.__module__.split(".", 1)[0]
    dists = list(_module_distributions().get(top, []))
    dists.extend(getattr(cls, "code_dependencies", ()))
    out: dict[str, str | None] = {}
    for dist in sorted(set(dists)):
        version, source = _dist_version(dist), _editable_source(dist)
        out[dist] = f"{version}+src.{source}" if source else version
    return out


def _is_model_field(name: str) -> bool:
    return name in ("model", "base_model") or name.endswith("_model")


def _is_template_field(name: str) -> bool:
    return name == "template" or name.endswith("_template")


def _existing_file(value: Any) -> bool:
    if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096:
        return False
    try:
        return Path(value).expanduser().is_file()
    except OSError:
        return False


def signature_inputs(config: StageConfig) -> dict[str, Any]:
    """Fingerprints of the files and models a stage config names (see ``file_fields`` and
    ``weights_fields``): what a path cannot say about its contents."""
    cls = type(config)
    out: dict[str, Any] = {}
    for name in sorted(cls.model_fields):
        if name in cls.runtime_fields:
            continue
        value = getattr(config, name, None)
        if isinstance(value, ComponentRef):
            options = value.options
            if isinstance(options.get("model"), str) and options["model"] and \
                    not options.get("base_url"):
                out[name] = model_fingerprint(options["model"], options.get("revision"))
        elif name in cls.weights_fields or _is_model_field(name):
            if isinstance(value, str) and value:
                out[name] = model_fingerprint(value)
            elif isinstance(value, dict) and isinstance(value.get("model"), str) \
                    and value["model"] and not value.get("base_url"):
                out[name] = model_fingerprint(value["model"], value.get("revision"))
        elif name in cls.file_fields or (_is_template_field(name) and _existing_file(value)):
            if isinstance(value, str) and value:
                out[name] = path_fingerprint(value)
            elif isinstance(value, list | tuple):
                out[name] = [path_fingerprint(v) for v in value if isinstance(v, str)]
    return out


class ComponentRef(BaseModel):
    """A component named inside a stage's options, with its own options beside ``use``::

        engine = { use = "vllm", model = "Qwen/Qwen3-VL-8B-Thinking", tensor_parallel_size = 8 }

    A plain string names the component with its defaults (``engine = "hf-text"``). The kind
    (``engine``, ``trainer``, ``verifier``) is the subclass's; ``curate validate`` resolves
    ``use`` against the plugin registry and validates the options against that component's
    Config before anything runs (:func:`check_refs`). Once resolved, the component's runtime
    fields (batch sizes, concurrency) stay out of the referring stage's signature, and the
    version of its code enters it (:meth:`code_versions`)."""

    model_config = ConfigDict(extra="allow")
    kind: ClassVar[str] = ""
    use: str
    _resolved: type | None = PrivateAttr(default=None)
    #: the references the component's own options hold (a verifier's judge engine), as
    #: :func:`check_refs` resolved them
    _nested: list[ComponentRef] = PrivateAttr(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _name_only(cls, value: Any) -> Any:
        return {"use": value} if isinstance(value, str) else value

    @property
    def options(self) -> dict[str, Any]:
        """The component's options (everything but ``use``)."""
        return dict(self.model_extra or {})

    @property
    def resolved(self) -> type | None:
        """The component's class, once :func:`check_refs` (or :meth:`resolve`) found it."""
        return self._resolved

    def resolve(self, host: Any) -> type:
        """The class registered under ``use`` for this kind (``host``: a PluginHost); a
        class the referring stage already knows (its default engine) when the host does not
        register that name. The recipe names ``use`` as it names a stage's, so with plugin
        autoloading off the installed entry point of that name is loaded on first need."""
        try:
            self._resolved = host.get(self.kind, self.use)
        except Exception:
            if self._resolved is None:
                raise
        return self._resolved

    def signature_view(self) -> dict[str, Any]:
        """What of this reference decides outputs: ``use`` and the options minus the resolved
        component's runtime fields."""
        runtime: frozenset[str] = frozenset()
        config_cls = getattr(self._resolved, "Config", None)
        if config_cls is not None:
            runtime = getattr(config_cls, "runtime_fields", frozenset())
        return {"use": self.use, **{k: v for k, v in self.options.items() if k not in runtime}}

    def code_versions(self) -> dict[str, str | None]:
        """Distribution -> version of the code behind the resolved component and the
        components its options name (:func:`code_versions`); empty while unresolved."""
        if self._resolved is None:
            return {}
        out = code_versions(self._resolved)
        for nested in self._nested:
            out.update(nested.code_versions())
        return out


class EngineRef(ComponentRef):
    """An engine named in a stage's options (``engine = { use = "vllm", model = "..." }``)."""

    kind: ClassVar[str] = "engine"


class TrainerRef(ComponentRef):
    """A trainer named in a stage's options (``trainer = { use = "sft", max_steps = 500 }``)."""

    kind: ClassVar[str] = "trainer"


class VerifierRef(ComponentRef):
    """A verifier named in a stage's options (``verifier = { use = "rule-verify" }``)."""

    kind: ClassVar[str] = "verifier"


#: Options spelt differently before 1.0, by their old name: what to write instead. Used only to
#: word the "unknown option" error (:func:`renamed_hint`); none of these keys is accepted.
RENAMED_OPTIONS: dict[str, str] = {
    "engine_options": 'engine = { use = "...", model = "...", ... } (the options go inside '
                      'the reference)',
    "caption_engine_options": 'caption_engine = { use = "...", model = "...", ... }',
    "verifier_options": 'verifier_stage = [{ use = "<verifier>", ... }] (each verifier '
                        'with its options)',
    "trainer_options": 'trainer = { use = "...", ... } (the options go inside the reference)',
    "llm_clean_options": 'llm_clean_engine = { use = "...", model = "...", ... }',
    "batch_size": "engine = { ..., batch_size = N } when the stage runs an engine (an "
                  "engine's runtime option)",
    "max_concurrency": "engine = { ..., max_concurrency = N } when the stage runs an engine "
                       "(an engine's runtime option)",
    "k": "samples_per_question (the difficulty filter's rollouts per sample, as the "
         "teacher's samples per question)",
    "prompt_template": 'template (a Jinja file or text, as the teacher\'s: "{{ question }}" '
                       'where "{question}" was)',
}
#: Options removed without a replacement, by name: why, for the same error.
REMOVED_OPTIONS: dict[str, str] = {
    "num_perm": "it has had no effect since SimHash replaced MinHash: delete it",
    "max_bucket": "it has had no effect since SimHash replaced MinHash: delete it",
    "chunk_size": "the streaming executor's shard window and the engine's admission keep "
                  "requests in flight: delete it (a smaller [run] shard_size starts the "
                  "first requests sooner)",
}


def renamed_hint(loc: Any) -> str:
    """``"; did you mean ...?"`` for an unknown option ``loc`` (a name or a pydantic error
    location) that an earlier spelling used, else ``""``."""
    key = str(loc[-1] if isinstance(loc, tuple | list) and loc else loc)
    if key in RENAMED_OPTIONS:
        return f"; did you mean {RENAMED_OPTIONS[key]}?"
    if key in REMOVED_OPTIONS:
        return f"; {REMOVED_OPTIONS[key]}"
    return ""


def component_refs(config: BaseModel) -> list[tuple[str, ComponentRef]]:
    """(field path, reference) of every component reference in ``config``."""
    out: list[tuple[str, ComponentRef]] = []
    for name in type(config).model_fields:
        value = getattr(config, name, None)
        items = value if isinstance(value, list | tuple) else [value]
        for i, item in enumerate(items):
            path = name if items is not value else f"{name}[{i}]"
            if isinstance(item, ComponentRef):
                out.append((path, item))
            elif isinstance(item, StageConfig):
                out.extend((f"{path}.{p}", r) for p, r in component_refs(item))
    return out


def component_code_versions(config: BaseModel) -> dict[str, str | None]:
    """Distribution -> version of the code behind every resolved component ``config``
    references (:meth:`ComponentRef.code_versions`): an engine edited in place, or upgraded,
    changes the signature of every stage that runs it."""
    out: dict[str, str | None] = {}
    for _, ref in component_refs(config):
        out.update(ref.code_versions())
    return dict(sorted(out.items()))


def check_refs(config: BaseModel, host: Any) -> list[str]:
    """Resolve every component reference in ``config`` against ``host`` (a PluginHost) and
    validate its options against that component's Config; one message per problem, naming
    the option path (``engine.model: ...``)."""
    problems: list[str] = []
    for path, ref in component_refs(config):
        try:
            cls = ref.resolve(host)
        except Exception as exc:  # UnknownComponentError: lists what is registered
            problems.append(f"{path}.use: {exc}")
            continue
        config_cls = getattr(cls, "Config", None)
        if config_cls is None:
            continue
        try:
            component_config = config_cls(**ref.options)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                msg = (f"unknown option{renamed_hint(err['loc'])}"
                       if err["type"] == "extra_forbidden" else
                       "required option missing" if err["type"] == "missing" else err["msg"])
                problems.append(f"{path}.{loc}: {msg} ({ref.kind} {ref.use!r}; "
                                f"`curate validate --explain` lists its options)")
            continue
        if hasattr(cls, "preflight_config"):  # engines: an optional dependency missing, say
            problems.extend(f"{path}: {p}" for p in cls.preflight_config(component_config))
        if isinstance(component_config, StageConfig) and hasattr(cls, "preflight") \
                and not hasattr(cls, "preflight_config"):
            try:
                stage = cls(component_config)
            except Exception as exc:  # a stage's own __init__ checks
                problems.append(f"{path}: {exc}")
                continue
            problems.extend(f"{path}: {p}" for p in stage.preflight(host))
        # a component naming components of its own (a verifier's judge engine)
        problems.extend(f"{path}.{p}" for p in check_refs(component_config, host))
        ref._nested = [nested for _, nested in component_refs(component_config)]
    return problems
