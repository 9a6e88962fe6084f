"""Controller: a queue of keys fed by watches, drained by N workers calling a Reconciler.

Error policy (controller-runtime's):

* the reconciler raises   -> retry with the queue's per-key exponential backoff;
* it raises TerminalError -> no retry; logged and recorded as a Warning Event;
* ``Result(requeue_after=s)`` -> run again in ``s`` seconds (backoff reset);
* ``Result(requeue=True)``    -> run again with backoff;
* anything else           -> done until the next event (backoff reset).

A worker survives whatever a reconcile throws; only shutdown ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import structlog

from kaito_core.engine.cache import SharedCache
from kaito_core.engine.events import EventRecorder
from kaito_core.engine.handler import EnqueueForObject, EnqueueForOwner, EnqueueMapped, MapFunc
from kaito_core.engine.informer import EventHandler, Informer
from kaito_core.engine.metrics import ControllerMetrics, EngineMetrics
from kaito_core.engine.predicate import Predicate
from kaito_core.engine.queue import ShutDownError, WorkQueue
from kaito_core.engine.ratelimit import RateLimiter
from kaito_core.engine.reconcile import Reconciler, Request, Result, TerminalError
from kaito_core.engine.resources import ResourceKind

if TYPE_CHECKING:
    from kaito_core.engine.builder import ControllerBuilder

__all__ = ["Controller", "Watch"]

log = structlog.get_logger("kaito_core.engine.controller")


#: How a watched kind's events become keys: the object itself, its controlling owner, or a map function.
WatchMode = Literal["self", "owner", "map"]


@dataclass(frozen=True)
class Watch:
    """One source of keys: a kind, how its events map to keys, and which events count."""

    kind: ResourceKind
    mode: WatchMode
    map_fn: MapFunc | None = None
    predicates: tuple[Predicate, ...] = ()
    label_selector: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("self", "owner", "map"):
            raise ValueError(f"Watch.mode must be 'self', 'owner' or 'map', not {self.mode!r}")
        if self.mode == "map" and self.map_fn is None:
            raise ValueError("a Watch in mode 'map' needs a map_fn")

    def handler(self, queue: WorkQueue[Request], owner: ResourceKind) -> EventHandler:
        if self.mode == "self":
            return EnqueueForObject(queue, self.predicates)
        if self.mode == "owner":
            return EnqueueForOwner(queue, owner, self.predicates)
        assert self.map_fn is not None  # checked in __post_init__; narrows the type
        return EnqueueMapped(queue, self.map_fn, self.predicates)


@dataclass
class Controller:
    """Built by :meth:`Controller.for_` (a :class:`ControllerBuilder`), run by the Manager."""

    name: str
    kind: ResourceKind
    reconciler: Reconciler
    watches: Sequence[Watch]
    workers: int = 1
    rate_limiter: Callable[[], RateLimiter] | None = None
    reconcile_timeout: float | None = None
    queue: WorkQueue[Request] = field(init=False)
    _cache: SharedCache | None = field(default=None, init=False)
    _recorder: EventRecorder | None = field(default=None, init=False)
    _metrics: ControllerMetrics | None = field(default=None, init=False)
    _registrations: list[tuple[Informer, EventHandler]] = field(default_factory=list, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    @staticmethod
    def for_(kind: ResourceKind, *predicates: Predicate) -> ControllerBuilder:
        """Start building a controller that reconciles ``kind``."""
        from kaito_core.engine.builder import ControllerBuilder

        return ControllerBuilder(kind, predicates)

    # -- wiring (the Manager calls these)

    def setup(self, cache: SharedCache, metrics: EngineMetrics | None = None,
              recorder: EventRecorder | None = None) -> None:
        """Create the queue and ask the cache for the informers (before the cache starts)."""
        self._cache = cache
        self._recorder = recorder
        self._metrics = (metrics or EngineMetrics()).for_controller(self.name)
        self.queue = WorkQueue(self.name, rate_limiter=self.rate_limiter() if self.rate_limiter else None,
                               metrics=self._metrics.queue)
        self._metrics.queue.watch_queue(self.queue.unfinished_work_seconds,
                                        self.queue.longest_running_processor_seconds)
        for watch in self.watches:
            cache.informer(watch.kind, label_selector=watch.label_selector)

    @property
    def cache(self) -> SharedCache:
        assert self._cache is not None, "controller not set up"
        return self._cache

    async def start(self) -> None:
        """Attach handlers (each replays the cache: the first full pass) and start the workers."""
        assert self._cache is not None and self._metrics is not None, "call setup() first"
        for watch in self.watches:
            informer = self._cache.informer(watch.kind, label_selector=watch.label_selector)
            handler = informer.add_handler(watch.handler(self.queue, self.kind))
            self._registrations.append((informer, handler))
        self._metrics.max_concurrent.set(self.workers)
        self._tasks = [asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
                       for i in range(self.workers)]
        log.info("controller started", controller=self.name, workers=self.workers)

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop taking work, let in-flight reconciles finish (up to ``drain_timeout``), stop workers."""
        for informer, handler in self._registrations:
            informer.remove_handler(handler)
        self._registrations.clear()
        if not self._tasks:
            return
        drained = await self.queue.shutdown_with_drain(drain_timeout)
        if not drained:
            log.warning("reconciles still running at shutdown; cancelling", controller=self.name)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        log.info("controller stopped", controller=self.name)

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    # -- the work

    async def _worker(self) -> None:
        while True:
            try:
                request = await self.queue.get()
            except ShutDownError:
                return
            try:
                await self._reconcile(request)
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - _reconcile handles everything; belt and braces
                log.exception("worker survived an unexpected error", controller=self.name)
            finally:
                self.queue.done(request)

    async def _reconcile(self, request: Request) -> None:
        assert self._metrics is not None
        metrics = self._metrics
        reconcile_id = uuid.uuid4().hex[:12]
        metrics.active_workers.inc()
        started = time.perf_counter()
        fields = {"controller": self.name, "namespace": request.namespace, "name": request.name,
                  "reconcile_id": reconcile_id}
        rlog = log.bind(**fields)  # explicit, in case the application's structlog skips contextvars
        # contextvars: any structlog line the reconciler itself writes carries the same fields.
        with structlog.contextvars.bound_contextvars(**fields):
            try:
                async with asyncio.timeout(self.reconcile_timeout):
                    result = await self.reconciler.reconcile(request)
            except TerminalError as exc:
                self.queue.forget(request)
                metrics.error.inc()
                metrics.errors.inc()
                metrics.terminal.inc()
                rlog.error("reconcile failed permanently; not retrying", error=str(exc))
                self._record_failure(request, exc.reason, str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.error.inc()
                metrics.errors.inc()
                self.queue.add_rate_limited(request)
                rlog.warning("reconcile failed; will retry", error=repr(exc),
                            retries=self.queue.num_requeues(request), exc_info=True)
            else:
                if result is None:  # tolerate a reconciler that forgot to return Result()
                    result = Result()
                if result.requeue_after:
                    self.queue.forget(request)
                    self.queue.add_after(request, result.requeue_after)
                    metrics.requeue_after.inc()
                elif result.requeue:
                    self.queue.add_rate_limited(request)
                    metrics.requeue.inc()
                else:
                    self.queue.forget(request)
                    metrics.success.inc()
            finally:
                metrics.time.observe(time.perf_counter() - started)
                metrics.active_workers.dec()

    def _record_failure(self, request: Request, reason: str, message: str) -> None:
        if self._recorder is None or self._cache is None:
            return
        with contextlib.suppress(LookupError):
            obj = self._cache.get(self.kind, request.namespace, request.name, copy=False)
            if obj is not None:
                self._recorder.warning(obj, reason, message)
