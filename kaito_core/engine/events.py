"""EventRecorder: Kubernetes Events (core/v1) about objects, correlated the way client-go does.

Recording never fails a reconcile. Every event first goes through an :class:`EventCorrelator`
(pure, no I/O), as client-go's ``EventCorrelator``:

* **dedupe**: an event like one already recorded (same object, type, reason and message) within
  ``window`` is not a new Event object: the one Event's ``count`` goes up and ``lastTimestamp``
  moves, written as one patch, and repeats that come while a write is pending ride on that write;
* **aggregate**: ``max_similar`` events of the same object, type and reason with different messages
  within ``window`` become one Event "(combined from similar events): <latest message>" with a count;
* **spam filter**: a token bucket per object (``burst``, one token back per ``refill_seconds``) drops
  a storm of Normal events; Warnings are always recorded.

``event``/``normal``/``warning`` return at once (a background task writes); ``emit`` writes before it
returns, so a controller can finish every write a change causes within the reconcile that made it
(nothing drains after the object is Ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from kaito_core.engine.client import Client
from kaito_core.engine.errors import NotFoundError
from kaito_core.engine.resources import EVENT

__all__ = ["EventCorrelator", "EventRecorder", "EventSeries", "EventType"]

log = structlog.get_logger("kaito_core.engine.events")
EventType = Literal["Normal", "Warning"]

#: client-go's prefix of an aggregated Event's message.
COMBINED_PREFIX = "(combined from similar events): "


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class EventSeries:
    """One Event object and the occurrences folded into it."""

    involved: dict[str, Any]
    type: EventType
    reason: str
    message: str
    first: str
    last: str
    seen_at: float
    count: int = 1
    name: str | None = None
    """The Event's name once it was created."""
    written: int = 0
    """The count the apiserver has (0: not created yet)."""
    queued: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def dirty(self) -> bool:
        return self.written < self.count


@dataclass
class _Similar:
    messages: set[str]
    since: float


@dataclass
class _Bucket:
    tokens: float
    at: float


class EventCorrelator:
    """Folds events into series (client-go's dedupe, aggregation and spam filter); no I/O."""

    def __init__(self, *, window: float = 600.0, max_similar: int = 10, burst: int = 25,
                 refill_seconds: float = 300.0, max_series: int = 4096,
                 clock: Callable[[], float] = time.monotonic, now_iso: Callable[[], str] = _now_iso):
        self.window = window
        self.max_similar = max_similar
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.max_series = max_series
        self.clock = clock
        self.now_iso = now_iso
        self.series: OrderedDict[tuple[str, ...], EventSeries] = OrderedDict()
        self._similar: OrderedDict[tuple[str, ...], _Similar] = OrderedDict()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.filtered = 0

    def _allow(self, object_key: str, now: float) -> bool:
        bucket = self._buckets.pop(object_key, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) / self.refill_seconds)
        bucket.at = now
        self._buckets[object_key] = bucket
        self._trim(self._buckets)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _trim(self, table: OrderedDict[Any, Any]) -> None:
        while len(table) > self.max_series:
            table.popitem(last=False)

    def observe(self, involved: Mapping[str, Any], type_: EventType, reason: str,
                message: str) -> tuple[tuple[str, ...], EventSeries] | None:
        """The series this event joins (new or existing, its count already up), or None if filtered."""
        now = self.clock()
        object_key = "/".join(str(involved.get(k) or "") for k in ("kind", "namespace", "name", "uid"))
        if type_ != "Warning" and not self._allow(object_key, now):
            self.filtered += 1
            return None
        similar_key = (object_key, type_, reason)
        similar = self._similar.pop(similar_key, None)
        if similar is None or now - similar.since > self.window:
            similar = _Similar(set(), now)
        similar.messages.add(message)
        self._similar[similar_key] = similar
        self._trim(self._similar)
        if len(similar.messages) >= self.max_similar:
            key: tuple[str, ...] = (*similar_key, "")  # one series for all of them
            message = COMBINED_PREFIX + message
        else:
            key = (*similar_key, message)
        series = self.series.pop(key, None)
        stamp = self.now_iso()
        if series is None or now - series.seen_at > self.window:
            series = EventSeries(dict(involved), type_, reason, message, stamp, stamp, now)
        else:
            series.count += 1
            series.message, series.last, series.seen_at = message, stamp, now
            series.involved["resourceVersion"] = involved.get("resourceVersion", "")
        self.series[key] = series
        # The oldest series go first; one still being written lives on with its writer, only its
        # future repeats would start a new Event.
        self._trim(self.series)
        return key, series


class EventRecorder:
    """Records events through an :class:`EventCorrelator` (``start``/``stop`` are the Manager's job)."""

    def __init__(self, client: Client, component: str, *, host: str = "", buffer: int = 1000,
                 aggregate_window: float = 600.0, timeout: float = 5.0,
                 correlator: EventCorrelator | None = None):
        self.client = client
        self.component = component
        self.host = host
        self.timeout = timeout
        self.correlator = correlator or EventCorrelator(window=aggregate_window)
        self._queue: asyncio.Queue[EventSeries] = asyncio.Queue(buffer)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0
        """Event writes made (creates and patches)."""

    @property
    def filtered(self) -> int:
        return self.correlator.filtered

    def _involved(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        return {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
                "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")}

    def _observe(self, obj: Mapping[str, Any], type_: EventType, reason: str, message: str) -> EventSeries | None:
        seen = self.correlator.observe(self._involved(obj), type_, reason, message[:1024])
        return seen[1] if seen is not None else None

    def event(self, obj: Mapping[str, Any], type: EventType, reason: str, message: str) -> None:
        """Record an event about ``obj`` (an object dict); returns at once, a background task writes it."""
        series = self._observe(obj, type, reason, message)
        if series is None or series.queued:
            return  # filtered, or a write of this series is pending and will carry the new count
        try:
            self._queue.put_nowait(series)
            series.queued = True
        except asyncio.QueueFull:
            self.dropped += 1  # an event storm must not eat memory; the condition still tells the story

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, "Normal", reason, message)

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, "Warning", reason, message)

    async def emit(self, obj: Mapping[str, Any], type: EventType, reason: str, message: str) -> None:
        """Record an event and write it before returning (errors are logged, never raised)."""
        series = self._observe(obj, type, reason, message)
        if series is not None:
            await self._flush(series)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"events:{self.component}")

    async def stop(self, flush_timeout: float = 2.0) -> None:
        """Write what is buffered (for a little while), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_timeout):
                await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            series = await self._queue.get()
            try:
                series.queued = False
                await self._flush(series)
            finally:
                self._queue.task_done()

    async def _flush(self, series: EventSeries) -> None:
        """Bring the apiserver's Event up to the series' count: one create or one patch."""
        async with series.lock:
            if not series.dirty:
                return  # another writer carried this occurrence
            count = series.count
            try:
                await self._write(series, count)
                series.written = count
                self.written += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not write event", reason=series.reason,
                            object=series.involved.get("name"), error=repr(exc))

    async def _write(self, series: EventSeries, count: int) -> None:
        involved = series.involved
        namespace = involved["namespace"] or "default"
        if series.name is not None:
            try:
                await self.client.patch(EVENT, series.name, {"count": count, "lastTimestamp": series.last,
                                                             "message": series.message},
                                        namespace, timeout=self.timeout)
                return
            except NotFoundError:
                pass  # the Event expired (TTL 1h): write a fresh one
        name = f"{involved['name']}.{uuid.uuid4().hex[:16]}"
        await self.client.create({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v},
            "reason": series.reason, "message": series.message, "type": series.type,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "reportingComponent": self.component,
            "reportingInstance": self.host or self.component,
            "firstTimestamp": series.first, "lastTimestamp": series.last, "count": count,
        }, kind=EVENT, namespace=namespace, timeout=self.timeout)
        series.name = name
