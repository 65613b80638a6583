"""Stage and component configs: the pydantic base every ``Config`` derives from, and what of
a config enters a cache signature (its values minus runtime-only fields, the versions of the
code behind it, and fingerprints of the files and models it names)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata as md
import importlib.util
import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from dualcurate.fingerprint import model_fingerprint, path_fingerprint


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
