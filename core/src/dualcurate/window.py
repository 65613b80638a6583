"""The generation window: how much work the engines have, across every shard in flight.

The streaming executor runs several shards of a generating stage at once. Each shard's thread
hands its cache misses to the engine through ``generate_cached``, which reports here: samples
handed over (``submitted``) and samples answered (``answered``). The executor admits the next
shard while the engines hold fewer than ``depth × capacity`` unanswered samples and no shard
is still preparing its first requests, so the engine always has a queue to draw from when a
shard's slowest requests are the only ones left of it. Nothing here knows about shards' rows
or the store: it is counting and a condition variable to wait on.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Hashable

#: The executor keeps about this many times an engine's capacity handed to it: one capacity
#: working and two queued, so a finished request is replaced at once even while the next
#: shard is still rendering its prompts on a busy machine.
DEFAULT_DEPTH = 3


class GenerationCancelled(RuntimeError):
    """The stage stopped (another shard failed, or the run was interrupted): a shard still
    running must not send more requests."""


class GenerationWindow:
    """Thread-safe counters of samples in flight, and the shards that have started asking."""

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        self.depth = depth
        self.condition = threading.Condition()
        self.outstanding = 0
        self.capacity = 0
        self.engaged: set[Hashable] = set()
        self.cancelled = False

    def submitted(self, token: Hashable | None, samples: int, capacity: int) -> None:
        """``samples`` were handed to an engine that works on ``capacity`` at once, for the
        shard ``token``: that shard's demand is now counted."""
        with self.condition:
            self.outstanding += samples
            self.capacity = max(self.capacity, capacity)
            if token is not None:
                self.engaged.add(token)
            self.condition.notify_all()

    def answered(self, samples: int) -> None:
        """``samples`` came back (answered or failed)."""
        if samples <= 0:
            return
        with self.condition:
            before = self.outstanding
            self.outstanding = max(self.outstanding - samples, 0)
            if before >= self.low_water() > self.outstanding:
                self.condition.notify_all()

    def low_water(self) -> int:
        return self.depth * self.capacity

    def hungry(self) -> bool:
        """True when the engines could take more (call with ``condition`` held)."""
        if self.capacity == 0:
            return False  # nothing asked yet: the shard that will ask is still preparing
        return self.outstanding < self.low_water()

    def may_admit(self, running: Collection[Hashable], reserved: int, limit: int,
                  generating: bool = True) -> bool:
        """The admission rule both executors follow (call with ``condition`` held): start
        another shard when fewer than ``limit`` are ``running`` or ``reserved`` and either none
        is, or the stage does not generate, or no running shard is still preparing its first
        requests (its demand is not counted yet) and the engines are hungry."""
        busy = len(running) + reserved
        if busy >= limit:
            return False
        if busy == 0 or not generating:
            return True
        preparing = reserved > 0 or any(i not in self.engaged for i in running)
        return not preparing and self.hungry()
