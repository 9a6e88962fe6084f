"""WorkQueue: client-go's rate-limited, delaying work queue, in pure asyncio.

The guarantees controllers build on:

* dedup: an item added many times before a worker takes it runs once;
* exclusivity: an item is never handed to two workers at once; adding it while
  it is processed marks it dirty, and it is queued again when ``done`` is called;
* ``add_after``: delayed adds, and when an item is already waiting the earliest
  time wins;
* ``add_rate_limited``/``forget``: per-item backoff from a :class:`RateLimiter`;
* ``shutdown_with_drain``: no new work is handed out, in-flight work finishes.

Items are hashable keys (a :class:`~kaito_core.engine.reconcile.Request`), never objects:
the reconciler reads the latest state from the cache when it runs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from kaito_core.engine.clock import Clock, LoopClock, Timer
from kaito_core.engine.ratelimit import RateLimiter, default_rate_limiter

__all__ = ["NullQueueMetrics", "QueueMetrics", "ShutDownError", "WorkQueue"]

T = TypeVar("T", bound=Hashable)


class ShutDownError(Exception):
    """``get`` on a queue that is shutting down: the worker should exit."""


class QueueMetrics(Protocol):
    def added(self) -> None: ...

    def got(self, queued_for: float) -> None: ...

    def done(self, worked_for: float) -> None: ...

    def retried(self) -> None: ...

    def depth(self, depth: int) -> None: ...


class NullQueueMetrics:
    def added(self) -> None: ...

    def got(self, queued_for: float) -> None: ...

    def done(self, worked_for: float) -> None: ...

    def retried(self) -> None: ...

    def depth(self, depth: int) -> None: ...


class WorkQueue(Generic[T]):
    """A deduplicating, exclusive, delaying, rate-limited queue of keys."""

    def __init__(self, name: str = "", *, rate_limiter: RateLimiter | None = None, clock: Clock | None = None,
                 metrics: QueueMetrics | None = None):
        self.name = name
        self.rate_limiter = rate_limiter or default_rate_limiter()
        self.clock: Clock = clock or LoopClock()
        self.metrics: QueueMetrics = metrics or NullQueueMetrics()
        self._queue: deque[T] = deque()
        self._dirty: set[T] = set()  # wants to run (queued, or re-added while processing)
        self._processing: set[T] = set()
        self._waiting: dict[T, tuple[float, Timer]] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._added_at: dict[T, float] = {}
        self._started_at: dict[T, float] = {}
        self._shutting_down = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- adding

    def add(self, item: T) -> None:
        if self._shutting_down or item in self._dirty:
            return
        self.metrics.added()
        self._dirty.add(item)
        self._added_at.setdefault(item, self.clock.now())
        if item in self._processing:
            return  # queued again by done()
        self._queue.append(item)
        self.metrics.depth(len(self._queue))
        self._wake_one()

    def add_after(self, item: T, delay: float) -> None:
        """Add once ``delay`` seconds have passed; if already waiting, the earlier time wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(item)
            return
        deadline = self.clock.now() + delay
        existing = self._waiting.get(item)
        if existing is not None:
            if existing[0] <= deadline:
                return
            existing[1].cancel()
        timer = self.clock.call_later(delay, lambda: self._fire(item, deadline))
        self._waiting[item] = (deadline, timer)

    def _fire(self, item: T, deadline: float) -> None:
        current = self._waiting.get(item)
        if current is not None and current[0] == deadline:
            del self._waiting[item]
            self.add(item)

    def add_rate_limited(self, item: T) -> None:
        """Retry later, after the rate limiter's backoff for this item."""
        self.metrics.retried()
        self.add_after(item, self.rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """The item succeeded: its backoff starts from scratch next time."""
        self.rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self.rate_limiter.num_requeues(item)

    # -- taking

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    async def get(self) -> T:
        """The next item; raises :class:`ShutDownError` once the queue is shutting down."""
        while not self._queue and not self._shutting_down:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                getter.cancel()
                if getter.done() and not getter.cancelled() and self._queue:
                    self._wake_one()  # we were woken for an item we will not take: pass it on
                raise
        if self._shutting_down:
            raise ShutDownError(self.name)
        item = self._queue.popleft()
        self._processing.add(item)
        self._dirty.discard(item)
        self._idle.clear()
        now = self.clock.now()
        self.metrics.got(now - self._added_at.pop(item, now))
        self.metrics.depth(len(self._queue))
        self._started_at[item] = now
        return item

    def done(self, item: T) -> None:
        """The worker finished with ``item``; if it was re-added meanwhile, queue it again."""
        self._processing.discard(item)
        started = self._started_at.pop(item, None)
        if started is not None:
            self.metrics.done(self.clock.now() - started)
        if item in self._dirty and not self._shutting_down:
            self._queue.append(item)
            self.metrics.depth(len(self._queue))
            self._wake_one()
        if not self._processing:
            self._idle.set()

    # -- introspection

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def processing(self) -> int:
        return len(self._processing)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def unfinished_work_seconds(self) -> float:
        """Seconds of work in progress, summed over items (a stuck worker makes this climb)."""
        now = self.clock.now()
        return sum(now - started for started in self._started_at.values())

    def longest_running_processor_seconds(self) -> float:
        now = self.clock.now()
        return max((now - started for started in self._started_at.values()), default=0.0)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    # -- stopping

    def shutdown(self) -> None:
        """Stop handing out work; queued and waiting items are dropped (a restart re-lists them)."""
        self._shutting_down = True
        for _, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)

    async def shutdown_with_drain(self, timeout: float | None = None) -> bool:
        """Shut down, then wait until every in-flight item is done; False on timeout."""
        self.shutdown()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False
