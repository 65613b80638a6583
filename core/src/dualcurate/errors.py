"""Errors users can act on. The CLI prints them as one paragraph and exits with ``exit_code``."""

from __future__ import annotations


class DualcurateError(Exception):
    """Base class: a problem with the user's input, named with what to do about it."""

    exit_code = 2


class RecipeError(DualcurateError):
    """The recipe (TOML) is malformed or does not validate; lists every problem at once."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"recipe {source}: {len(problems)} problem(s):\n{lines}")


class UnknownComponentError(DualcurateError):
    """A plugin, stage or engine name that nothing installed provides."""


class StoreError(DualcurateError):
    """A run directory that cannot be used (unwritable, other version, other shard layout)."""


class StageFailed(DualcurateError):
    """A stage raised while running; what it had committed stays in the run."""

    exit_code = 1
