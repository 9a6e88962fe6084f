"""EventRecorder: Kubernetes Events (core/v1) about objects, written in the background.

Recording never blocks or fails a reconcile: events go through a bounded
buffer to a writer task. Identical events (same object, type, reason and
message) within ``aggregate_window`` are folded into one Event whose
``count`` goes up, as kubectl shows them ("x5 over 2m").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from kaito_core.engine.client import Client
from kaito_core.engine.errors import APIError, NotFoundError
from kaito_core.engine.resources import EVENT

__all__ = ["EventRecorder", "EventType"]

log = structlog.get_logger("kaito_core.engine.events")
EventType = Literal["Normal", "Warning"]


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    first: str
    last_sent: float


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Queue events; a background task writes them (``start``/``stop`` are the Manager's job)."""

    def __init__(self, client: Client, component: str, *, host: str = "", buffer: int = 1000,
                 aggregate_window: float = 600.0, timeout: float = 5.0):
        self.client = client
        self.component = component
        self.host = host
        self.aggregate_window = aggregate_window
        self.timeout = timeout
        self._queue: asyncio.Queue[tuple[dict[str, Any], EventType, str, str]] = asyncio.Queue(buffer)
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    def event(self, obj: Mapping[str, Any], type: EventType, reason: str, message: str) -> None:
        """Record an event about ``obj`` (an object dict); returns at once."""
        meta = obj.get("metadata") or {}
        involved = {
            "apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
            "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", ""),
        }
        try:
            self._queue.put_nowait((involved, type, reason, message[:1024]))
        except asyncio.QueueFull:
            self.dropped += 1  # an event storm must not eat memory; the condition still tells the story

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, "Normal", reason, message)

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, "Warning", reason, message)

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
            involved, type_, reason, message = await self._queue.get()
            try:
                await self._write(involved, type_, reason, message)
                self.written += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not write event", reason=reason, object=involved.get("name"), error=repr(exc))
            finally:
                self._queue.task_done()

    async def _write(self, involved: dict[str, Any], type_: EventType, reason: str, message: str) -> None:
        namespace = involved["namespace"] or "default"
        key = (involved["uid"] or involved["name"], involved["kind"], type_, reason, message)
        now = _now_iso()
        seen = self._seen.get(key)
        if seen is not None and time.monotonic() - seen.last_sent < self.aggregate_window:
            seen.count += 1
            seen.last_sent = time.monotonic()
            try:
                await self.client.patch(EVENT, seen.name, {"count": seen.count, "lastTimestamp": now},
                                        seen.namespace, timeout=self.timeout)
                self._seen.move_to_end(key)
                return
            except NotFoundError:
                pass  # the Event expired (TTL 1h): write a fresh one
            except APIError:
                raise
        name = f"{involved['name']}.{uuid.uuid4().hex[:16]}"
        await self.client.create({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "reportingComponent": self.component,
            "reportingInstance": self.host or self.component,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }, kind=EVENT, namespace=namespace, timeout=self.timeout)
        self._seen[key] = _Seen(name, namespace, 1, now, time.monotonic())
        while len(self._seen) > 4096:
            self._seen.popitem(last=False)
