"""The plugin host: a typed wrapper around pluggy's PluginManager.

Plugins are entry points in group ``dualcurate``; the entry-point name is what ``--plugin``
takes. Core's own parts are registered the same way (``dualcurate.builtins``). Loading is
per entry point and failure-tolerant: a plugin that fails to import is recorded with its error
and the rest still load. Core code never calls ``pm.hook`` untyped: it asks the host.

Which hook fills which registry, and which base class a registered class must have, comes from
the one table of kinds (:mod:`dualcurate.kinds`). Two plugins registering the same name for
one kind, or a class of the wrong kind, is an error naming both, raised by the lookup of that
name (``host.get``): commands and recipes that never use the name still work, and
``curate plugins`` lists the problem. ``host.get`` also loads, on first need, the installed
entry point named like the component (with autoload off). Core's own components are a plugin
like any other, ``builtins``: loaded by module name, as pytest and llm load theirs, so the host
needs no import of the layers above it.

Two words: a *plugin* is an entry point (its name is what ``--plugin`` takes, ``curate
plugins`` lists and the manifest's ``plugins`` records); a *component* is a class a plugin
registers under a name for one kind (what a recipe's ``use`` names, and a stage record's
``use`` in the manifest). A plugin may register several components; a distribution may expose
several plugins.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

import dualcurate.hookspecs as hookspecs
from dualcurate.errors import DualcurateError, UnknownComponentError
from dualcurate.kinds import KINDS, kind, kind_problem, qualified_name

if TYPE_CHECKING:
    from dualcurate.export_extras import ExportField, ExportSubset
    from dualcurate.report_sections import ReportSection, RunView

ENTRY_POINT_GROUP = "dualcurate"
#: core's own plugin modules, registered first under the name ``builtins``
BUILTIN_PLUGINS = ("dualcurate.builtins",)

#: every hook a plugin may implement (the functions of :mod:`dualcurate.hookspecs`)
HOOK_NAMES: tuple[str, ...] = tuple(sorted(
    n for n, f in vars(hookspecs).items()
    if callable(f) and hasattr(f, f"{hookspecs.PROJECT_NAME}_spec")))
__all__ = ["HOOK_NAMES", "PluginHost", "PluginInfo", "PluginWarning", "RegistrationError",
           "RegistryPlugin"]


class RegistrationError(DualcurateError):
    """Two plugins register one name for one kind, a plugin registers a class of the wrong
    kind, or a plugin implements a hook that does not exist. Names the plugins involved.
    Raised by the lookup of the name concerned (a misspelt hook: when the plugin is
    registered, or selected with ``--plugin``)."""


class PluginWarning(UserWarning):
    """A plugin that probably does not do what its author meant (a method named like a hook
    but not marked ``@hookimpl``, so pluggy ignores it)."""


class RegistryPlugin:
    """A plugin that registers a fixed registry (kind -> name -> class) through every kind's
    hook, under the names given: a host in another process (a Ray actor) resolves components
    exactly as the host that built the registry did. Its hooks come from
    :data:`dualcurate.kinds.KINDS`, so a new kind is shipped without an edit here."""

    def __init__(self, registry: dict[str, dict[str, type]]):
        self.registry = registry


def _registering(kind_name: str, hook: str) -> Any:
    def register_all(self: RegistryPlugin, register: Any) -> None:
        for name, cls in self.registry.get(kind_name, {}).items():
            register(cls, name)

    register_all.__name__ = register_all.__qualname__ = hook
    return hookspecs.hookimpl(register_all)


for _k in KINDS:
    setattr(RegistryPlugin, _k.hook, _registering(_k.name, _k.hook))


@dataclass
class PluginInfo:
    """One row of ``curate plugins``."""

    name: str
    distribution: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    registers: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    #: registrations refused: a name two plugins register, a class of the wrong kind
    problems: list[str] = field(default_factory=list)
    #: a method named like a hook but not marked ``@hookimpl`` (so nothing calls it)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "hooks": self.hooks, "registers": self.registers, "error": self.error,
                "problems": self.problems, "warnings": self.warnings}


def _hook_problems(pm: pluggy.PluginManager, plugin: object, name: str) -> tuple[list[str],
                                                                                   list[str]]:
    """(errors, warnings) about ``plugin``'s hooks: a ``@hookimpl`` whose name is no hook
    (misspelt), and methods named like hooks that are not marked ``@hookimpl`` (ignored)."""
    errors, unmarked = [], []
    for attr in dir(plugin):
        if not attr.startswith(f"{hookspecs.PROJECT_NAME}_"):
            continue
        marked = pm.parse_hookimpl_opts(plugin, attr) is not None
        if marked and attr not in HOOK_NAMES:
            near = difflib.get_close_matches(attr, HOOK_NAMES, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}?" if near else f"the hooks: {', '.join(HOOK_NAMES)}"
            errors.append(f"plugin {name!r}: {attr} is not a dualcurate hook; {hint} "
                          f"(docs/plugin-hooks.md lists them)")
        elif not marked and callable(getattr(plugin, attr, None)) and \
                not isinstance(getattr(plugin, attr, None), type):
            unmarked.append(attr)
    warns = []
    if unmarked:
        warns.append(
            f"plugin {name!r}: {', '.join(unmarked)} "
            f"{'is' if len(unmarked) == 1 else 'are'} named like a hook but not marked "
            f"@hookimpl, so nothing calls {'it' if len(unmarked) == 1 else 'them'}; decorate "
            f"{'it' if len(unmarked) == 1 else 'each'} with @dualcurate.hookimpl")
    return errors, warns


def _core_version() -> str | None:
    try:
        return md.version("dualcurate")
    except md.PackageNotFoundError:
        return None


def env_plugin_names() -> list[str]:
    raw = os.environ.get("DUALCURATE_PLUGINS", "")
    return [n.strip() for n in raw.split(",") if n.strip()]


def autoload_enabled() -> bool:
    return os.environ.get("DUALCURATE_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0", "false")


class PluginHost:
    """Loads plugins and answers "which class is registered under this name for this kind".

    ``autoload=True`` loads every installed entry point (minus ``block``); with
    ``autoload=False`` only ``select`` are loaded (plus the built-ins unless
    ``builtins=False``).
    """

    def __init__(self, autoload: bool | None = None, select: Iterable[str] = (),
                 block: Iterable[str] = (), builtins: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.autoload = autoload_enabled() if autoload is None else autoload
        self.blocked = set(block)
        self.infos: dict[str, PluginInfo] = {}
        self._registry: dict[str, dict[str, type]] | None = None
        self._owners: dict[tuple[str, str], str] = {}
        #: (kind, name) -> why its registration was refused (looking it up raises this)
        self.refused: dict[tuple[str, str], list[str]] = {}
        if builtins:
            for module in BUILTIN_PLUGINS:
                self.register(importlib.import_module(module), name="builtins",
                              distribution="dualcurate", version=_core_version())
        wanted = list(select)
        if self.autoload:
            self.load_all()
        for name in wanted:
            self.load(name)
        self.pm.check_pending()

    # loading ---------------------------------------------------------------------------------
    @staticmethod
    def entry_points() -> dict[str, md.EntryPoint]:
        eps: dict[str, md.EntryPoint] = {}
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            eps.setdefault(ep.name, ep)
        return eps

    def load_all(self) -> None:
        for name in self.entry_points():
            if name not in self.blocked and name not in self.infos:
                self.load(name, strict=False)

    def load(self, name: str, strict: bool = True) -> PluginInfo:
        """Load the entry point ``name``. Unknown names raise (listing what is installed);
        import errors raise when ``strict`` and are recorded either way."""
        if name in self.infos:
            info = self.infos[name]
            if strict and info.error is not None:  # autoloaded already, and it failed
                raise DualcurateError(f"plugin {name!r} ({info.distribution}) failed to load: "
                                      f"{info.error}. Fix it, or run without it "
                                      f"(--no-plugin {name}).")
            return info
        if name in self.blocked:
            raise DualcurateError(f"plugin {name!r} is both selected and blocked (--no-plugin); "
                                  f"drop one of the two")
        eps = self.entry_points()
        ep = eps.get(name)
        if ep is None:
            installed = ", ".join(sorted(eps)) or "(none)"
            near = difflib.get_close_matches(name, list(eps), n=3, cutoff=0.6)
            hint = (f"Did you mean {' or '.join(repr(n) for n in near)}?" if near else
                    "Check the name against `curate plugins`, or install the distribution "
                    "that provides it (its documentation names the entry point).")
            raise UnknownComponentError(
                f"plugin {name!r}: no such plugin installed (entry point group "
                f"'{ENTRY_POINT_GROUP}'). {hint} Installed: {installed}.")
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break the others
            info = PluginInfo(name=name, distribution=dist, version=version,
                              error=f"{type(exc).__name__}: {exc}")
            info.traceback = traceback.format_exc()  # type: ignore[attr-defined]
            self.infos[name] = info
            if strict:
                raise DualcurateError(f"plugin {name!r} ({dist}) failed to import: "
                                      f"{info.error}. Reinstall it or run without it "
                                      f"(--no-plugin {name}).") from exc
            return info
        try:
            return self.register(obj, name=name, distribution=dist, version=version)
        except RegistrationError as exc:  # a misspelt hook: recorded as an import error is
            self.infos[name] = PluginInfo(name=name, distribution=dist, version=version,
                                          error=str(exc))
            if strict:
                raise
            return self.infos[name]

    def register(self, plugin: object, name: str | None = None, distribution: str | None = None,
                 version: str | None = None) -> PluginInfo:
        """Register a plugin object (module or class instance with hookimpls). A
        ``@hookimpl`` named like no hook raises :class:`RegistrationError` naming the nearest
        hook; a method named like a hook without ``@hookimpl`` warns (:class:`PluginWarning`)
        and is listed in the plugin's ``problems``."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        errors, warns = _hook_problems(self.pm, plugin, name)
        if errors:
            raise RegistrationError("; ".join(errors))
        for message in warns:
            warnings.warn(PluginWarning(message), stacklevel=2)
        if self.pm.get_plugin(name) is None:
            self.pm.register(plugin, name=name)
        hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        info = PluginInfo(name=name, distribution=distribution, version=version, hooks=hooks,
                          warnings=list(warns))
        self.infos[name] = info
        self._registry = None
        self.pm.check_pending()
        return info

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.infos.pop(name, None)
        self._registry = None

    # registry --------------------------------------------------------------------------------
    def _build_registry(self) -> dict[str, dict[str, type]]:
        """Ask every registration hook. A name two plugins register for one kind, or a class
        registered through the hook of another kind, is refused (recorded in
        ``self.refused`` and in the plugins' ``problems``), not raised: only its lookup
        fails, so everything that does not use it still works."""
        registry: dict[str, dict[str, type]] = {k.name: {} for k in KINDS}
        owners: dict[tuple[str, str], str] = {}
        refused: dict[tuple[str, str], list[str]] = {}
        blamed: dict[str, list[str]] = {}

        def refuse(key: tuple[str, str], message: str, *plugins: str) -> None:
            refused.setdefault(key, []).append(message)
            for plugin in plugins:
                blamed.setdefault(plugin, []).append(message)

        for info in self.infos.values():
            info.registers = {}
        for k in KINDS:
            hook = getattr(self.pm.hook, k.hook)
            for impl in hook.get_hookimpls():  # in registration order
                plugin_name = self.pm.get_name(impl.plugin) or "?"

                def register(cls: type, name: str | None = None, _k=k,
                             _owner: str = plugin_name) -> None:
                    reg_name = name or getattr(cls, "name", "") or getattr(cls, "__name__", "")
                    key = (_k.name, reg_name)
                    problem = kind_problem(cls, _k)
                    if problem is not None:
                        refuse(key, f"plugin {_owner!r}: {_k.title} {reg_name!r}: {problem}",
                               _owner)
                        return
                    if hasattr(cls, "preflight") and callable(getattr(cls, "check", None)):
                        refuse(key, f"plugin {_owner!r}: {_k.title} {reg_name!r}: "
                                    f"{qualified_name(cls)} defines check(host), which nothing "
                                    f"calls; the hook is preflight(host): rename it", _owner)
                        return
                    before = owners.get(key)
                    if before is not None and registry[_k.name][reg_name] is not cls:
                        refuse(key,
                               f"{_k.title} {reg_name!r} is registered by two plugins: "
                               f"{before!r} ({registry[_k.name][reg_name].__module__}) and "
                               f"{_owner!r} ({cls.__module__}); rename one (its class's "
                               f"`name`), uninstall one, or run without one of them "
                               f"(--no-plugin {_owner})", before, _owner)
                        return
                    registry[_k.name][reg_name] = cls
                    owners[key] = _owner
                    info = self.infos.get(_owner)
                    if info is not None and reg_name not in info.registers.get(_k.name, []):
                        info.registers.setdefault(_k.name, []).append(reg_name)

                impl.function(register=register)
        for kind_name, reg_name in refused:  # neither of two colliding classes is used
            registry[kind_name].pop(reg_name, None)
        for name, info in self.infos.items():
            info.problems = blamed.get(name, [])
        self._owners = owners
        self.refused = refused
        return registry

    @property
    def registry(self) -> dict[str, dict[str, type]]:
        """kind -> name -> class of every component registered without a problem."""
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry[kind])

    def get(self, kind_name: str, name: str) -> type:
        """The class registered under ``name`` for ``kind_name``. With autoload off, an
        installed plugin (entry point) of that name not loaded yet is loaded first, so a
        recipe's ``use = "hello"`` needs no ``--plugin hello``. A refused registration raises
        :class:`RegistrationError` saying why; an unknown name lists the choices."""
        try:
            title = kind(kind_name).title
        except KeyError as exc:
            raise UnknownComponentError(exc.args[0]) from None
        if name not in self.registry[kind_name] and (kind_name, name) not in self.refused \
                and name not in self.infos and name not in self.blocked \
                and name in self.entry_points():
            self.load(name)
        registry = self.registry  # (re)built: fills self.refused
        if (kind_name, name) in self.refused:
            raise RegistrationError("; ".join(self.refused[(kind_name, name)]))
        try:
            return registry[kind_name][name]
        except KeyError:
            have = ", ".join(self.names(kind_name)) or "(none)"
            near = difflib.get_close_matches(name, self.names(kind_name), n=3, cutoff=0.6)
            hint = (f"plugin {name!r} provides it but is blocked (--no-plugin {name})"
                    if name in self.blocked else
                    f"did you mean {' or '.join(repr(n) for n in near)}" if near else
                    "install the plugin that provides it, or pick one of those")
            failed = [f"plugin {i.name!r} failed to load ({i.error})"
                      for i in self.infos.values() if i.error]
            more = f" Note: {'; '.join(failed)}." if failed else ""
            unloaded = sorted(n for n in self.entry_points()
                              if n not in self.infos and n not in self.blocked)
            if unloaded and not near and name not in self.blocked:
                more += (f" Plugin autoload is off and installed plugins {', '.join(unloaded)} "
                         f"are not loaded: select the one providing it with --plugin NAME.")
            raise UnknownComponentError(
                f"{title} {name!r}: nothing registered under that name. Registered "
                f"{title}s: {have}. {hint[0].upper()}{hint[1:]}.{more}") from None

    def owner(self, kind: str, name: str) -> str | None:
        self.registry  # noqa: B018 - builds owners
        return self._owners.get((kind, name))

    def of_kind(self, kind: str) -> dict[str, type]:
        """name -> class of everything registered for ``kind``."""
        return dict(self.registry[kind])

    def register_commands(self, cli: Any) -> None:
        self.pm.hook.dualcurate_register_commands(cli=cli)

    def report_sections(self, run: RunView) -> list[ReportSection]:
        """Every plugin's sections of ``run``'s report (hook ``dualcurate_report_sections``),
        each tagged with its plugin, sorted by ``order`` then title, anchors made unique. A
        plugin whose hook raises or returns something else than sections gets a section
        saying so instead: the report, the card and the summary still show the others."""
        import html

        from dualcurate.report_sections import ORDER, ReportSection

        sections: list[ReportSection] = []
        for impl in self.pm.hook.dualcurate_report_sections.get_hookimpls():
            plugin = self.pm.get_name(impl.plugin) or "?"
            try:
                got = impl.function(run=run)
                got = [got] if isinstance(got, ReportSection) else list(got or [])
                bad = [s for s in got if not isinstance(s, ReportSection)]
                if bad:
                    raise TypeError(f"returned {type(bad[0]).__name__}, not ReportSection")
            except Exception as exc:  # one plugin's bug must not hide the whole report
                message = (f"plugin {plugin!r}: its report section failed: "
                           f"{type(exc).__name__}: {exc}")
                got = [ReportSection(
                    title=f"{plugin} (failed)", anchor="failed-section", order=990,
                    html=f'<p class="note">{html.escape(message)}</p>',
                    markdown=f"> {message}", data={"error": message})]
            for section in got:
                section.plugin = plugin
                sections.append(section)
        sections.sort(key=lambda s: (s.order, s.title))
        seen: set[str] = set(ORDER)  # core's own sections' ids
        for section in sections:
            anchor, n = section.anchor, 1
            while anchor in seen:
                n += 1
                anchor = f"{section.anchor}-{n}"
            section.anchor = anchor
            seen.add(anchor)
        return sections

    def export_extras(self) -> tuple[list[ExportSubset], list[ExportField]]:
        """Every plugin's export subsets and extra fields (hook ``dualcurate_export_extras``),
        each tagged with its plugin, in the order the plugins answer. A name two plugins add
        (or a hook returning something else) is an error naming the plugin: an export is
        never written with a cut or a field other than the one asked for."""
        from dualcurate.export_extras import ExportField, ExportSubset

        subsets: list[ExportSubset] = []
        fields: list[ExportField] = []
        owners: dict[tuple[str, str], str] = {}
        for impl in self.pm.hook.dualcurate_export_extras.get_hookimpls():
            plugin = self.pm.get_name(impl.plugin) or "?"
            for item in impl.function() or []:
                if isinstance(item, ExportSubset):
                    what, into = "subset", subsets
                elif isinstance(item, ExportField):
                    what, into = "field", fields
                else:
                    raise DualcurateError(
                        f"plugin {plugin!r}: dualcurate_export_extras returned "
                        f"{type(item).__name__}, not ExportSubset or ExportField")
                other = owners.get((what, item.name))
                if other is not None:
                    raise DualcurateError(
                        f"export {what} {item.name!r} is added by plugin {other!r} and again "
                        f"by plugin {plugin!r}: leave one out (--no-plugin NAME)")
                owners[(what, item.name)] = plugin
                item.plugin = plugin
                into.append(item)  # type: ignore[arg-type]
        return subsets, fields

    # listing -----------------------------------------------------------------------------------
    def plugin_infos(self, include_unloaded: bool = True) -> list[PluginInfo]:
        """Every loaded plugin (and, by default, installed-but-not-loaded ones, marked as
        such by an empty ``hooks`` list)."""
        self.registry  # noqa: B018 - fills info.registers
        infos = dict(self.infos)
        if include_unloaded:
            for name, ep in self.entry_points().items():
                if name not in infos:
                    infos[name] = PluginInfo(
                        name=name, distribution=ep.dist.name if ep.dist else None,
                        version=ep.dist.version if ep.dist else None,
                        error=None if name not in self.blocked else "blocked (--no-plugin)")
        return sorted(infos.values(), key=lambda i: (i.name != "builtins", i.name))

    def loaded_versions(self) -> dict[str, str | None]:
        """name -> version of every loaded plugin (recorded in the manifest)."""
        return {n: i.version for n, i in sorted(self.infos.items()) if i.error is None}

    def stage_kinds_of(self, plugin_name: str) -> dict[str, list[str]]:
        """kind -> names a loaded plugin registers (used by --plugin to override stages)."""
        self.registry  # noqa: B018
        info = self.infos.get(plugin_name)
        return dict(info.registers) if info else {}
