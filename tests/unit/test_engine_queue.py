"""WorkQueue semantics (client-go's), pinned: dedup, exclusivity, add_after, backoff, drain."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from kaito_core.engine import (
    BucketRateLimiter,
    FakeClock,
    ItemBackoff,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    Result,
    ShutDownError,
    WorkQueue,
    soonest,
)


def make(clock: FakeClock | None = None) -> WorkQueue[str]:
    return WorkQueue("t", rate_limiter=ItemExponentialFailureRateLimiter(0.005, 1000.0), clock=clock or FakeClock())


async def test_dedup_before_processing() -> None:
    q = make()
    for _ in range(5):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"
    assert len(q) == 0


async def test_fifo_order() -> None:
    q = make()
    for item in "cab":
        q.add(item)
    assert [await q.get() for _ in range(3)] == ["c", "a", "b"]


async def test_readd_while_processing_runs_again_after_done() -> None:
    q = make()
    q.add("a")
    item = await q.get()
    q.add("a")
    q.add("a")
    # Not handed out while in progress, even though it was re-added.
    assert len(q) == 0
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await q.get()
    q.done(item)
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert len(q) == 0 and q.processing == 0


async def test_never_two_workers_on_one_key() -> None:
    q = make()
    active: set[str] = set()
    overlaps: list[str] = []
    runs: dict[str, int] = {}

    async def worker() -> None:
        while True:
            try:
                item = await q.get()
            except ShutDownError:
                return
            if item in active:
                overlaps.append(item)
            active.add(item)
            runs[item] = runs.get(item, 0) + 1
            await asyncio.sleep(0.001)
            active.discard(item)
            q.done(item)

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    for round_ in range(50):
        for key in ("a", "b", "c"):
            q.add(key)
        await asyncio.sleep(0 if round_ % 2 else 0.0005)
    while len(q) or q.processing:  # noqa: ASYNC110 - polling a condition is the point here
        await asyncio.sleep(0.005)
    assert await q.shutdown_with_drain(1)
    await asyncio.gather(*workers)
    assert overlaps == []
    assert set(runs) == {"a", "b", "c"}
    # Dedup coalesced most of the 50 adds per key.
    assert all(1 <= count <= 50 for count in runs.values())


async def test_add_after_fires_at_deadline() -> None:
    clock = FakeClock()
    q = make(clock)
    q.add_after("a", 10)
    assert len(q) == 0 and q.waiting == 1
    clock.advance(9.9)
    assert len(q) == 0
    clock.advance(0.1)
    assert len(q) == 1 and q.waiting == 0
    assert await q.get() == "a"


async def test_add_after_earliest_wins() -> None:
    clock = FakeClock()
    q = make(clock)
    q.add_after("a", 10)
    q.add_after("a", 3)  # earlier: replaces
    q.add_after("a", 7)  # later: ignored
    assert q.waiting == 1
    clock.advance(3)
    assert len(q) == 1
    await q.get()
    q.done("a")
    clock.advance(10)
    assert len(q) == 0  # the 10 s and 7 s adds were superseded, not queued


async def test_add_after_zero_is_immediate_and_dedups_with_queued() -> None:
    clock = FakeClock()
    q = make(clock)
    q.add("a")
    q.add_after("a", 0)
    assert len(q) == 1
    q.add_after("a", 5)
    clock.advance(5)
    assert len(q) == 1  # still queued once: dedup applies to delayed adds too


async def test_rate_limited_backoff_grows_and_forget_resets() -> None:
    clock = FakeClock()
    q = make(clock)
    for expected in [0.005, 0.01, 0.02, 0.04, 0.08, 0.16]:
        q.add_rate_limited("a")
        clock.advance(expected * 0.98)
        assert len(q) == 0, f"fired before {expected}s"
        clock.advance(expected * 0.04)
        assert len(q) == 1, f"did not fire at {expected}s"
        await q.get()
        q.done("a")
    assert q.num_requeues("a") == 6
    q.forget("a")
    assert q.num_requeues("a") == 0
    q.add_rate_limited("a")
    clock.advance(0.005)
    assert len(q) == 1


def test_exponential_limiter_caps_at_max() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [limiter.when("x") for _ in range(30)]
    assert delays[0] == 0.005
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert delays[-1] == 1000.0
    assert limiter.when("y") == 0.005  # per item
    for _ in range(100):
        limiter.when("x")
    assert limiter.when("x") == 1000.0


def test_bucket_limiter_and_max_of() -> None:
    now = [0.0]
    bucket = BucketRateLimiter(qps=10, burst=2, now=lambda: now[0])
    assert bucket.when("a") == 0 and bucket.when("b") == 0
    assert bucket.when("c") == pytest.approx(0.1)
    assert bucket.when("d") == pytest.approx(0.2)
    combined = MaxOfRateLimiter(ItemExponentialFailureRateLimiter(1.0, 10.0),
                                BucketRateLimiter(qps=1000, burst=1000, now=lambda: now[0]))
    assert combined.when("a") == 1.0 and combined.when("a") == 2.0
    assert combined.num_requeues("a") == 2
    combined.forget("a")
    assert combined.num_requeues("a") == 0


def test_item_backoff_starts_at_the_callers_base_and_remembers_the_wait() -> None:
    now = [100.0]
    backoff = ItemBackoff(5.0, clock=lambda: now[0])
    assert [backoff.when("m", 0.25) for _ in range(3)] == [0.25, 0.5, 1.0]
    assert backoff.remaining("m") == 1.0 and backoff.remaining("other") == 0.0
    now[0] += 0.4
    assert backoff.remaining("m") == pytest.approx(0.6)
    assert backoff.when("m", 1.0) == 5.0  # 8s, capped
    assert backoff.num_requeues("m") == 4 and backoff.when("n") == 1.0  # per item; 1s without a base
    backoff.forget("m")
    assert backoff.remaining("m") == 0.0 and backoff.num_requeues("m") == 0


def test_soonest_result_of_sub_reconcilers() -> None:
    assert soonest() == Result()
    assert soonest(Result(), Result(requeue_after=5), Result(requeue_after=0.5)) == Result(requeue_after=0.5)
    assert soonest(Result(), Result(requeue=True)) == Result(requeue=True)


async def test_shutdown_wakes_getters_and_refuses_work() -> None:
    q = make()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.shutdown()
    with pytest.raises(ShutDownError):
        await getter
    q.add("a")
    assert len(q) == 0
    with pytest.raises(ShutDownError):
        await q.get()


async def test_shutdown_cancels_delayed_items() -> None:
    clock = FakeClock()
    q = make(clock)
    q.add_after("a", 1)
    q.shutdown()
    clock.advance(2)
    assert len(q) == 0 and clock.pending == 0


async def test_drain_waits_for_in_flight_work() -> None:
    q = make()
    q.add("a")
    item = await q.get()
    drain = asyncio.create_task(q.shutdown_with_drain(5))
    await asyncio.sleep(0.02)
    assert not drain.done()  # "a" is still being processed
    q.done(item)
    assert await drain is True


async def test_drain_times_out() -> None:
    q = make()
    q.add("a")
    await q.get()
    assert await q.shutdown_with_drain(0.01) is False


async def test_cancelled_getter_passes_item_on() -> None:
    q = make()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("a")
    first.cancel()  # woken for "a" but cancelled before it ran
    await asyncio.sleep(0)
    async with asyncio.timeout(1):
        assert await second == "a"


async def test_metrics_hooks_called() -> None:
    calls: dict[str, list[float]] = {"added": [], "got": [], "done": [], "retried": [], "depth": []}

    class Recorder:
        def added(self) -> None:
            calls["added"].append(1)

        def got(self, queued_for: float) -> None:
            calls["got"].append(queued_for)

        def done(self, worked_for: float) -> None:
            calls["done"].append(worked_for)

        def retried(self) -> None:
            calls["retried"].append(1)

        def depth(self, depth: int) -> None:
            calls["depth"].append(depth)

    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue("m", clock=clock, metrics=Recorder())
    q.add("a")
    clock.advance(2)
    await q.get()
    clock.advance(3)
    q.done("a")
    q.add_rate_limited("a")
    assert calls["added"] == [1] and calls["got"] == [2.0] and calls["done"] == [3.0]
    assert calls["retried"] == [1] and calls["depth"] == [1, 0]


async def test_unfinished_and_longest_running() -> None:
    clock = FakeClock()
    q = make(clock)
    q.add("a")
    q.add("b")
    await q.get()
    clock.advance(2)
    await q.get()
    clock.advance(1)
    assert q.unfinished_work_seconds() == 4.0  # 3 s + 1 s
    assert q.longest_running_processor_seconds() == 3.0
    q.done("a")
    q.done("b")
    assert q.unfinished_work_seconds() == 0.0 and q.longest_running_processor_seconds() == 0.0
