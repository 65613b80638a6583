"""Hook implementations (thin): each entry point is one plugin object. Stage modules are
imported inside the hooks, so listing plugins imports nothing heavy."""

from __future__ import annotations

from dualcurate import Register, hookimpl


class DifficultyPlugin:
    """Entry point ``difficulty``: the pass-rate filter on a proxy model."""

    @hookimpl
    def dualcurate_register_filters(self, register: Register) -> None:
        from dualcurate_difficulty.filter import DifficultyFilter

        register(DifficultyFilter)


class RLSubsetPlugin:
    """Entry point ``rl-subset``: the seeded RL-subset carve-out (a whole-dataset filter)."""

    @hookimpl
    def dualcurate_register_filters(self, register: Register) -> None:
        from dualcurate_difficulty.rl_subset import RLSubsetFilter

        register(RLSubsetFilter)


difficulty = DifficultyPlugin()
rl_subset = RLSubsetPlugin()
