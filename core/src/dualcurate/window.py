"""Waiting for engines: the generation window across every shard in flight, and the mailbox of
one ``generate`` call between an engine's worker thread and the thread that called it.

The streaming executor runs several shards of a generating stage at once. Each shard's thread
hands its cache misses to the engine through ``generate_cached``, which reports here: samples
handed over (``submitted``) and samples answered (``answered``). The executor admits the next
shard while the engines hold fewer than ``depth × capacity`` unanswered samples and no shard
is still preparing its first requests, so the engine always has a queue to draw from when a
shard's slowest requests are the only ones left of it. Nothing here knows about shards' rows
or the store: it is counting, a condition variable and a queue to wait on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection, Hashable
from typing import TYPE_CHECKING, Any

from dualcurate.errors import DualcurateError

if TYPE_CHECKING:
    from dualcurate.chat import Completion, OnResult

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


#: What an engine's worker posts to a call's :class:`ResultMailbox` when the engine closes.
ENGINE_CLOSED = object()


class ResultMailbox:
    """One ``generate`` call of an engine that runs the model in a worker thread (hf, vllm):
    the worker posts each request index whose samples are all done (or
    :data:`ENGINE_CLOSED`); the calling thread waits in :meth:`deliver` and reports each to
    ``on_result`` itself, so cache writes never hold up the model."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.delivered = 0

    def put(self, item: Any) -> None:
        """A finished request's index, or :data:`ENGINE_CLOSED`."""
        self._queue.put(item)

    def deliver(self, results: list[list[Completion]], on_result: OnResult | None,
                closed: Callable[[int], str]) -> None:
        """Wait for every request of the call, calling ``on_result(i, results[i])`` as each is
        posted; raise a DualcurateError with ``closed(requests left)`` if the engine closes.
        ``delivered`` counts what was reported (the caller cancels the rest on the way out)."""
        total = len(results)
        while self.delivered < total:
            item = self._queue.get()
            if item is ENGINE_CLOSED:
                raise DualcurateError(closed(total - self.delivered))
            self.delivered += 1
            if on_result is not None:
                on_result(item, results[item])
