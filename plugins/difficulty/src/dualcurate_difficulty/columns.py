"""The columns the difficulty plugin's stages add, with their Arrow types (their
``column_types``): a shard whose pass rates are all None (adaptive sampling settled every
sample early) still stores ``pass_rate`` as float64, like every other shard."""

from __future__ import annotations

import pyarrow as pa

from dualcurate.schema import TRACES_TYPE

#: the difficulty filter's columns (``keep`` is core's)
COLUMN_TYPES: dict[str, pa.DataType] = {
    "pass_rate": pa.float64(),
    "pass_correct": pa.int64(),
    "pass_drawn": pa.int64(),
    "rollouts": TRACES_TYPE,
}
