"""Rate limiters deciding how long a failed item waits before its next try (client-go's).

The default (:func:`default_rate_limiter`) is controller-runtime's: the larger
of a per-item exponential backoff (5 ms doubling to 1000 s) and an overall
token bucket (10 qps, burst 100), so one broken object backs off alone while
a mass failure cannot hammer the API server.

:class:`ItemBackoff` is the same per-item doubling for a reconciler that paces its own calls
to a slow or failing dependency (a cloud API): the first wait is the caller's (a provider's
``retry_after``), and the earliest next try is remembered, so an unrelated event that wakes
the reconciler cannot cut the wait short.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Protocol

__all__ = [
    "BucketRateLimiter",
    "ItemBackoff",
    "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "default_rate_limiter",
]


class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float:
        """Seconds to wait before ``item`` may run again (and count one more failure)."""
        ...

    def forget(self, item: Hashable) -> None:
        """The item succeeded: reset its failures."""
        ...

    def num_requeues(self, item: Hashable) -> int: ...


class ItemExponentialFailureRateLimiter:
    """``base * 2**failures``, capped at ``max_delay``, per item."""

    def __init__(self, base: float = 0.005, max_delay: float = 1000.0):
        self.base = base
        self.max_delay = max_delay
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        if failures > 60:  # 2**60 * 5ms is far past any cap; avoid float overflow games
            return self.max_delay
        return min(self.max_delay, self.base * float(2 ** failures))

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """A token bucket over all items: ``qps`` sustained, ``burst`` at once."""

    def __init__(self, qps: float = 10.0, burst: int = 100, now: Callable[[], float] = time.monotonic):
        self.qps = qps
        self.burst = burst
        self._now = now
        self._tokens = float(burst)
        self._last = now()

    def when(self, item: Hashable) -> float:
        now = self._now()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0  # reserve a token even if it is in the future (like x/time/rate)
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.qps

    def forget(self, item: Hashable) -> None:
        return None

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest wait any of the limiters asks for."""

    def __init__(self, *limiters: RateLimiter):
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


class ItemBackoff:
    """Per item: ``base * 2**failures`` (``base`` given at each failure), capped at ``max_delay``,
    and the time before which the item should not be tried again.

    It is a :class:`RateLimiter` (``when(item)`` uses a base of one second), counting failures
    with an :class:`ItemExponentialFailureRateLimiter`.
    """

    def __init__(self, max_delay: float, *, clock: Callable[[], float] = time.monotonic):
        self.max_delay = max_delay
        self._clock = clock
        self._failures = ItemExponentialFailureRateLimiter(1.0, float("inf"))
        self._not_before: dict[Hashable, float] = {}

    def when(self, item: Hashable, base: float | None = None) -> float:
        """Count one more failure of ``item``; the seconds to wait (remembered, see :meth:`remaining`)."""
        factor = self._failures.when(item)
        start = base if base is not None and base > 0 else 1.0
        delay = float(min(start * factor, self.max_delay))
        self._not_before[item] = self._clock() + delay
        return delay

    def remaining(self, item: Hashable) -> float:
        """Seconds ``item`` must still wait (0 when it may be tried now)."""
        return max(0.0, self._not_before.get(item, 0.0) - self._clock())

    def forget(self, item: Hashable) -> None:
        self._failures.forget(item)
        self._not_before.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.num_requeues(item)


def default_rate_limiter() -> RateLimiter:
    return MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100))
