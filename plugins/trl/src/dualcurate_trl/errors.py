"""The error every trainer stage raises for an input it cannot use."""

from __future__ import annotations

from dualcurate import DualcurateError


class TrainerError(DualcurateError):
    """A training input that cannot be used (model, data, checkpoint)."""
