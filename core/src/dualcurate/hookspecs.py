"""Hook specifications: every hook is a registration hook taking a ``register`` callable.

A plugin implements any of these with ``@dualcurate.hookimpl``. Each hook is called once per
plugin host, when the registry is first built (and again after a plugin is registered or
unregistered). ``register(cls)`` files ``cls`` under ``cls.name``; ``register(cls, name="x")``
files it under another name. None of the hooks is ``firstresult``: every plugin is asked.
``dualcurate_report_sections`` and ``dualcurate_export_extras`` are the exceptions to
registration: the first is called whenever a run is shown, and returns the plugin's sections
of that run's report; the second whenever a run is exported for a training tool, and returns
the subsets and fields the plugin adds to the export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    import click

    from dualcurate.export_extras import ExportField, ExportSubset
    from dualcurate.report_sections import ReportSection, RunView

PROJECT_NAME = "dualcurate"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The callable every registration hook receives."""

    def __call__(self, cls: type, name: str | None = None) -> None: ...


@hookspec
def dualcurate_register_sources(register: Register) -> None:
    """Register Source classes (stage ``source``): they read data into canonical rows."""


@hookspec
def dualcurate_register_distillers(register: Register) -> None:
    """Register Distiller classes (stage ``distill``): a teacher writes reasoning traces."""


@hookspec
def dualcurate_register_verifiers(register: Register) -> None:
    """Register Verifier classes (stage ``verify``): they give each trace a verdict."""


@hookspec
def dualcurate_register_filters(register: Register) -> None:
    """Register Filter classes (stage ``filter``): they add columns and a ``keep`` flag."""


@hookspec
def dualcurate_register_trainers(register: Register) -> None:
    """Register Trainer classes (stage ``train``): they turn rows into a model directory."""


@hookspec
def dualcurate_register_efficacy_judges(register: Register) -> None:
    """Register EfficacyJudge classes (stage ``judge``): per-group reasoning vs direct verdicts."""


@hookspec
def dualcurate_register_engines(register: Register) -> None:
    """Register Engine classes: model backends that answer chat requests with images."""


@hookspec
def dualcurate_register_executors(register: Register) -> None:
    """Register Executor classes: they run map stages over shards (local, ray, ...)."""


@hookspec
def dualcurate_register_model_builders(register: Register) -> None:
    """Register ModelBuilder classes: they build a model a recipe's ``[models]`` table names
    (``build = { use = "..." }``) when it is not there yet, before the stages run."""


@hookspec
def dualcurate_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``curate`` CLI (called when the CLI is built)."""


@hookspec
def dualcurate_report_sections(run: RunView) -> list[ReportSection] | None:
    """Add sections (figures, tables, a summary) to a run's report, card and summary.

    Called each time a run is shown (``report.html``/``report.md``, the end of ``curate run``
    and ``curate report``, the dataset card of ``curate push``) with a read-only view of the
    run; every plugin is asked. Return the sections this plugin has for this run, or None.
    """


@hookspec
def dualcurate_export_extras() -> list[ExportSubset | ExportField] | None:
    """Add ``--subset`` cuts and verl ``extra_info`` fields to the training-tool exports.

    Called each time ``curate export --format llamafactory|verl`` runs; every plugin is asked.
    Return the :class:`~dualcurate.export_extras.ExportSubset` and
    :class:`~dualcurate.export_extras.ExportField` objects this plugin adds (over its own
    columns), or None.
    """
