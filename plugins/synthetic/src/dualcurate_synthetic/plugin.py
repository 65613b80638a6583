"""Hook implementations (thin): each entry point is one plugin object. Stage modules are
imported inside the hooks."""

from __future__ import annotations

from dualcurate import Register, hookimpl


class SyntheticPlugin:
    """Entry point ``synthetic``: the rendered-puzzle source (the embedded default)."""

    @hookimpl
    def dualcurate_register_sources(self, register: Register) -> None:
        from dualcurate_synthetic.source import SyntheticSource

        register(SyntheticSource)


class ReferencePlugin:
    """Entry point ``reference``: the offline teacher stand-in (reference solutions)."""

    @hookimpl
    def dualcurate_register_distillers(self, register: Register) -> None:
        from dualcurate_synthetic.reference import ReferenceDistiller

        register(ReferenceDistiller)


synthetic = SyntheticPlugin()
reference = ReferencePlugin()
