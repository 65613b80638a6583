"""Ray on a shared 2-core machine: small object store, no dashboard, no usage stats, and
logical GPUs where GPU placement is under test. Every Ray test is marked ``ray`` (its own CI
step, ``make test-ray``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

OBJECT_STORE = 200 * 1024**2
INIT: dict[str, Any] = {"object_store_memory": OBJECT_STORE, "include_dashboard": False,
                        "logging_level": "warning"}


@pytest.fixture
def local_ray() -> Iterator[Any]:
    """A local Ray with 2 CPUs and 2 logical GPUs (no GPU needed: placement only)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=2, _system_config={"worker_niceness": 0}, **INIT)
    try:
        yield ray
    finally:
        ray.shutdown()
