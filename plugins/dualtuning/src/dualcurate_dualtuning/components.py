"""Finding the components the judge is configured with (engine, trainer, verifier) by their
registered name, through the plugin host.

The judge names other plugins in its options (``engine = "hf"``, ``trainer = "sft"``). With
plugin autoloading off, the pipeline loads only the plugins a recipe ``use``s, so an installed
entry point of the same name is loaded here on first need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualcurate.errors import UnknownComponentError

if TYPE_CHECKING:
    from dualcurate.context import StageContext
    from dualcurate.plugins import PluginHost


def host_of(ctx: StageContext) -> PluginHost:
    """The context's plugin host (a default one for library use without a host)."""
    if ctx.host is None:
        from dualcurate.plugins import PluginHost

        ctx.host = PluginHost()
    return ctx.host


def component(host: PluginHost, kind: str, name: str) -> type:
    """The class registered as ``name`` for ``kind``, loading the entry point ``name`` if
    nothing registers it yet; unknown names raise with the registered choices."""
    try:
        return host.get(kind, name)
    except UnknownComponentError:
        if name not in host.entry_points() or name in host.infos:
            raise
    host.load(name)
    return host.get(kind, name)
