"""dualcurate-trl: the ``sft``, ``grpo`` and ``gspo`` trainer stages on TRL and PEFT.

Importing this package imports neither torch nor TRL; the stage modules do.
"""

from dualcurate_trl.data import long_completion, short_completion

__all__ = ["long_completion", "short_completion"]
