"""The plugin host: a typed wrapper around pluggy's PluginManager.

Plugins are entry points in group ``dualcurate``; the entry-point name is what ``--plugin``
takes. Core's own parts are registered the same way (``dualcurate.builtins``). Loading is
per entry point and failure-tolerant: a plugin that fails to import is recorded with its error
and the rest still load. Core code never calls ``pm.hook`` untyped: it asks the host.

Which hook fills which registry, and which base class a registered class must have, comes from
the one table of kinds (:mod:`dualcurate.kinds`). Two plugins registering the same name for
one kind, or a class of the wrong kind, is an error naming both. Core's own components are a
plugin like any other, ``builtins``: loaded by module name, as pytest and llm load theirs, so
the host needs no import of the layers above it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from dualcurate import hookspecs
from dualcurate.errors import DualcurateError, UnknownComponentError
from dualcurate.kinds import BY_NAME, KINDS, STAGE_KINDS, kind_problem, qualified_name

if TYPE_CHECKING:
    from dualcurate.report_sections import ReportSection, RunView

ENTRY_POINT_GROUP = "dualcurate"
#: core's own plugin modules, registered first under the name ``builtins``
BUILTIN_PLUGINS = ("dualcurate.builtins",)

#: registry kind -> hook that fills it (derived from :data:`dualcurate.kinds.KINDS`)
KIND_HOOKS: dict[str, str] = {k.name: k.hook for k in KINDS}
__all__ = ["KIND_HOOKS", "STAGE_KINDS", "PluginHost", "PluginInfo", "RegistrationError"]


class RegistrationError(DualcurateError):
    """Two plugins register one name for one kind, or a plugin registers a class of the wrong
    kind. Raised when the registry is built; names the plugins involved."""


@dataclass
class PluginInfo:
    """One row of ``curate plugins``."""

    name: str
    distribution: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    registers: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "hooks": self.hooks, "registers": self.registers, "error": self.error}


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
            return self.infos[name]
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
        return self.register(obj, name=name, distribution=dist, version=version)

    def register(self, plugin: object, name: str | None = None, distribution: str | None = None,
                 version: str | None = None) -> PluginInfo:
        """Register a plugin object (module or class instance with hookimpls)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if self.pm.get_plugin(name) is None:
            self.pm.register(plugin, name=name)
        hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        info = PluginInfo(name=name, distribution=distribution, version=version, hooks=hooks)
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
        registry: dict[str, dict[str, type]] = {k.name: {} for k in KINDS}
        owners: dict[tuple[str, str], str] = {}
        problems: list[str] = []
        for info in self.infos.values():
            info.registers = {}
        for k in KINDS:
            hook = getattr(self.pm.hook, k.hook)
            for impl in hook.get_hookimpls():  # in registration order
                plugin_name = self.pm.get_name(impl.plugin) or "?"

                def register(cls: type, name: str | None = None, _k=k,
                             _owner: str = plugin_name) -> None:
                    reg_name = name or getattr(cls, "name", "") or getattr(cls, "__name__", "")
                    problem = kind_problem(cls, _k)
                    if problem is not None:
                        problems.append(f"plugin {_owner!r}: {_k.title} {reg_name!r}: "
                                        f"{problem}; register it through the hook of its "
                                        f"kind")
                        return
                    if hasattr(cls, "preflight") and callable(getattr(cls, "check", None)):
                        problems.append(f"plugin {_owner!r}: {_k.title} {reg_name!r}: "
                                        f"{qualified_name(cls)} defines check(host), which "
                                        f"nothing calls; the hook is preflight(host): rename "
                                        f"it")
                        return
                    before = owners.get((_k.name, reg_name))
                    if before is not None and registry[_k.name][reg_name] is not cls:
                        problems.append(
                            f"{_k.title} {reg_name!r} is registered by two plugins: "
                            f"{before!r} ({registry[_k.name][reg_name].__module__}) and "
                            f"{_owner!r} ({cls.__module__}); uninstall one, or run without "
                            f"one of them (--no-plugin {_owner})")
                        return
                    registry[_k.name][reg_name] = cls
                    owners[(_k.name, reg_name)] = _owner
                    info = self.infos.get(_owner)
                    if info is not None and reg_name not in info.registers.get(_k.name, []):
                        info.registers.setdefault(_k.name, []).append(reg_name)

                impl.function(register=register)
        if problems:
            raise RegistrationError("plugin registry: " + "; ".join(problems))
        self._owners = owners
        return registry

    @property
    def registry(self) -> dict[str, dict[str, type]]:
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry[kind])

    def get(self, kind: str, name: str) -> type:
        """The class registered under ``name`` for ``kind``; unknown names list the choices."""
        if kind not in BY_NAME:
            raise UnknownComponentError(f"kind {kind!r}: not one of {', '.join(BY_NAME)}")
        try:
            return self.registry[kind][name]
        except KeyError:
            title = BY_NAME[kind].title
            have = ", ".join(self.names(kind)) or "(none)"
            near = difflib.get_close_matches(name, self.names(kind), n=3, cutoff=0.6)
            hint = (f"load the plugin that provides it with --plugin {name}"
                    if name in self.entry_points() else
                    f"did you mean {' or '.join(repr(n) for n in near)}" if near else
                    "install the plugin that provides it, or pick one of those")
            raise UnknownComponentError(
                f"{title} {name!r}: nothing registered under that name. Registered "
                f"{title}s: {have}. {hint}.") from None

    def owner(self, kind: str, name: str) -> str | None:
        self.registry  # noqa: B018 - builds owners
        return self._owners.get((kind, name))

    def of_kind(self, kind: str) -> dict[str, type]:
        """name -> class of everything registered for ``kind``."""
        return dict(self.registry[kind])

    # one accessor per kind, for readability at call sites
    def sources(self) -> dict[str, type]:
        return self.of_kind("source")

    def distillers(self) -> dict[str, type]:
        return self.of_kind("distiller")

    def verifiers(self) -> dict[str, type]:
        return self.of_kind("verifier")

    def filters(self) -> dict[str, type]:
        return self.of_kind("filter")

    def trainers(self) -> dict[str, type]:
        return self.of_kind("trainer")

    def efficacy_judges(self) -> dict[str, type]:
        return self.of_kind("efficacy_judge")

    def engines(self) -> dict[str, type]:
        return self.of_kind("engine")

    def executors(self) -> dict[str, type]:
        return self.of_kind("executor")

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
