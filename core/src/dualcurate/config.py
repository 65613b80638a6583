"""Stage and component configs: the pydantic base every ``Config`` derives from, and what of
a config enters a cache signature (its values minus runtime-only fields, the versions of the
code behind it, and fingerprints of the files and models it names)."""

from __future__ import annotations

import functools
import importlib.metadata as md
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

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
    #: in the same folder recomputes the stage. ``model``, ``base_model``, ``*_model`` and
    #: ``*engine_options`` count without listing.
    weights_fields: ClassVar[frozenset[str]] = frozenset()


@functools.cache
def _module_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


@functools.cache
def _dist_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def code_versions(cls: type) -> dict[str, str | None]:
    """Distribution -> version of the code behind a stage class: the distribution that ships
    its module and its ``code_dependencies``."""
    top = cls.__module__.split(".", 1)[0]
    dists = list(_module_distributions().get(top, []))
    dists.extend(cls.code_dependencies)
    return {d: _dist_version(d) for d in sorted(set(dists))}


def _is_model_field(name: str) -> bool:
    return name in ("model", "base_model") or name.endswith("_model") or \
        name.endswith("engine_options")


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
        if name in cls.weights_fields or _is_model_field(name):
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
