"""The one table of component kinds: what plugins register, under which hook, on which base
class, and (for pipeline stages) under which recipe section.

Everything that needs to know the kinds reads this table: the plugin host (which hook fills
which registry, which base class a registered class must have), the recipe parser (section
names), the pipeline (which kinds ``--plugin`` swaps), the CLI (``curate plugins``) and the
docs checks. A new kind is one row here, its base class, and its hookspec.

This module is the bottom layer of the core: it imports nothing from ``dualcurate``. Base
classes are named by their dotted path, and a class's kind is checked against its ``kind``
attribute and its base classes' names, so the table needs no import of the classes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One kind of component.

    ``name``: the registry key and every class's ``kind`` attribute (``efficacy_judge``).
    ``hook``: the registration hook (``dualcurate_register_efficacy_judges``).
    ``bases``: dotted paths of the base classes a registered class must derive from.
    ``section``: the recipe section a stage of this kind is written under (``judge``); None
    for components that are not pipeline stages (engines, executors, model builders).
    ``label``: how messages name one of them (``efficacy judge``)."""

    name: str
    hook: str
    bases: tuple[str, ...]
    section: str | None = None
    label: str = ""

    @property
    def is_stage(self) -> bool:
        return self.section is not None

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ")


KINDS: tuple[Kind, ...] = (
    Kind("source", "dualcurate_register_sources", ("dualcurate.stages.Source",),
         section="source"),
    Kind("distiller", "dualcurate_register_distillers", ("dualcurate.stages.Distiller",),
         section="distill"),
    Kind("verifier", "dualcurate_register_verifiers", ("dualcurate.stages.Verifier",),
         section="verify"),
    Kind("filter", "dualcurate_register_filters",
         ("dualcurate.stages.Filter", "dualcurate.stages.DatasetFilter"), section="filter"),
    Kind("trainer", "dualcurate_register_trainers", ("dualcurate.stages.Trainer",),
         section="train"),
    Kind("efficacy_judge", "dualcurate_register_efficacy_judges",
         ("dualcurate.stages.EfficacyJudge",), section="judge", label="efficacy judge"),
    Kind("engine", "dualcurate_register_engines", ("dualcurate.engine.Engine",)),
    Kind("executor", "dualcurate_register_executors", ("dualcurate.stages.Executor",)),
    Kind("model_builder", "dualcurate_register_model_builders",
         ("dualcurate.models.ModelBuilder",), label="model builder"),
)

BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
BY_SECTION: dict[str, Kind] = {k.section: k for k in KINDS if k.section is not None}
#: kinds that are pipeline stages, in pipeline order
STAGE_KINDS: tuple[str, ...] = tuple(k.name for k in KINDS if k.is_stage)


def kind(name: str) -> Kind:
    """The kind called ``name``; an unknown name lists the kinds (and a near miss)."""
    try:
        return BY_NAME[name]
    except KeyError:
        near = difflib.get_close_matches(name, list(BY_NAME), n=1, cutoff=0.6)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise KeyError(f"{name!r} is not a kind of component; kinds: "
                       f"{', '.join(BY_NAME)}.{hint}") from None


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def derives_from(cls: type, k: Kind) -> bool:
    """Whether ``cls`` subclasses one of ``k``'s base classes (by dotted path; base classes
    re-exported from the ``dualcurate`` package are the same classes)."""
    names = {qualified_name(c) for c in getattr(cls, "__mro__", ())}
    return any(base in names for base in k.bases)


def kind_problem(cls: object, k: Kind) -> str | None:
    """Why ``cls`` cannot be registered as a ``k``, or None when it can: it must derive from
    one of ``k``'s base classes (a stage may instead derive from ``MapStage`` or
    ``DatasetStage`` and set ``kind`` itself), and its ``kind`` must be ``k.name``."""
    if not isinstance(cls, type):
        return f"{cls!r} is not a class"
    declared = getattr(cls, "kind", k.name)
    other = BY_NAME.get(declared) if isinstance(declared, str) else None
    if declared != k.name:
        what = f"a {other.title}" if other is not None else f"of kind {declared!r}"
        fix = (f"register it through {other.hook}" if other is not None else
               f"set its kind to {k.name!r} or register it through the hook of its kind")
        return (f"registered as a {k.title} through {k.hook}, but {qualified_name(cls)} is "
                f"{what}; {fix}")
    if derives_from(cls, k) or (k.is_stage and derives_from(cls, _ANY_STAGE)):
        return None
    names = " or ".join(b.rsplit(".", 1)[1] for b in k.bases)
    where = " or ".join(k.bases)
    return (f"{qualified_name(cls)} does not subclass {names}: subclass it "
            f"(`class {cls.__name__}({k.bases[0].rsplit('.', 1)[1]})`, from {where})")


_ANY_STAGE = Kind("stage", "", ("dualcurate.stages.MapStage", "dualcurate.stages.DatasetStage",
                                "dualcurate.stages.Source"))
