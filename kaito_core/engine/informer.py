"""Informer: LIST, then WATCH from the list's resourceVersion; keep a store; tell handlers.

The contract is client-go's: after ``has_synced`` the store holds every
object, and every change reaches the handlers at least as a final state.
When the watch breaks we resume from the last resourceVersion seen (bookmarks
keep it fresh); when the server says that version is gone (410, or an ERROR
event after etcd compaction) we LIST again and emit the difference against
the store, deletes included (as "final state unknown" tombstones), so no
change is lost even if its event was.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog

from kaito_core.engine.client import Client
from kaito_core.engine.errors import APIError, GoneError, error_from_response
from kaito_core.engine.indexers import IndexFunc
from kaito_core.engine.resources import ResourceKind, object_key
from kaito_core.engine.store import Store
from kaito_core.engine.transforms import Transform, intern_strings, strip_managed_fields

__all__ = ["EventHandler", "FuncHandler", "Informer", "strip_managed_fields"]

log = structlog.get_logger("kaito_core.engine.informer")


class EventHandler(Protocol):
    """Receives an informer's changes. Calls are synchronous and must be quick (enqueue, not work)."""

    def on_add(self, obj: dict[str, Any]) -> None: ...

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None: ...

    def on_delete(self, obj: dict[str, Any], final_state_unknown: bool = False) -> None: ...


class FuncHandler:
    """An EventHandler made of optional callables."""

    def __init__(self, on_add: Callable[[dict[str, Any]], None] | None = None,
                 on_update: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
                 on_delete: Callable[[dict[str, Any], bool], None] | None = None):
        self._add, self._update, self._delete = on_add, on_update, on_delete

    def on_add(self, obj: dict[str, Any]) -> None:
        if self._add:
            self._add(obj)

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if self._update:
            self._update(old, new)

    def on_delete(self, obj: dict[str, Any], final_state_unknown: bool = False) -> None:
        if self._delete:
            self._delete(obj, final_state_unknown)


def _rv(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


class Informer:
    """One LIST+WATCH of a kind (optionally a namespace and selectors) feeding a :class:`Store`."""

    def __init__(self, client: Client, kind: ResourceKind, *, namespace: str | None = None,
                 label_selector: str | None = None, field_selector: str | None = None,
                 resync_period: float | None = None, page_size: int = 500,
                 transform: Transform | None = strip_managed_fields,
                 indexers: Mapping[str, IndexFunc] | None = None,
                 watch_timeout: tuple[int, int] = (300, 600),
                 backoff: tuple[float, float] = (0.5, 10.0)):
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.page_size = page_size
        self.transform = transform
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.store = Store(indexers)
        self._handlers: list[EventHandler] = []
        self._synced = asyncio.Event()
        self._resource_version = ""
        self._task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        # Counters tests and metrics read: how often we re-listed / re-watched.
        self.lists = 0
        self.watches = 0
        self._log = log.bind(kind=kind.name, namespace=namespace, selector=label_selector)

    # -- handlers

    def add_handler(self, handler: EventHandler) -> EventHandler:
        """Register a handler; if the store is filled already, it first gets an add per object."""
        self._handlers.append(handler)
        for _, obj in self.store.items():
            self._call(handler.on_add, obj)
        return handler

    def remove_handler(self, handler: EventHandler) -> None:
        with contextlib.suppress(ValueError):
            self._handlers.remove(handler)

    def _call(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception:  # a broken handler must not stop the informer for everyone else
            self._log.exception("informer event handler failed")

    def _emit_add(self, obj: dict[str, Any]) -> None:
        for handler in list(self._handlers):
            self._call(handler.on_add, obj)

    def _emit_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        for handler in list(self._handlers):
            self._call(handler.on_update, old, new)

    def _emit_delete(self, obj: dict[str, Any], final_state_unknown: bool) -> None:
        for handler in list(self._handlers):
            self._call(handler.on_delete, obj, final_state_unknown)

    # -- lifecycle

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    @property
    def resource_version(self) -> str:
        return self._resource_version

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
            return True
        except TimeoutError:
            return False

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"informer:{self.kind.name}")
            if self.resync_period:
                self._resync_task = asyncio.create_task(self._resync_loop(), name=f"resync:{self.kind.name}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        for task in (self._task, self._resync_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._resync_task = None

    # -- the loop

    async def _run(self) -> None:
        need_list = True
        failures = 0
        while True:
            try:
                if need_list:
                    await self._list_and_replace()
                    need_list = False
                    failures = 0
                started = asyncio.get_running_loop().time()
                got_events = await self._watch()
                if got_events:
                    failures = 0
                elif asyncio.get_running_loop().time() - started < 1.0:
                    # Closed at once with nothing said (a proxy, an overloaded server):
                    # back off instead of spinning on reconnects.
                    failures += 1
                    await asyncio.sleep(min(self.backoff[1], self.backoff[0] * 2 ** (failures - 1)))
            except asyncio.CancelledError:
                raise
            except GoneError as exc:
                self._log.info("resourceVersion expired; re-listing", rv=self._resource_version, error=str(exc))
                need_list = True
                continue
            except (APIError, OSError, ValueError) as exc:
                failures += 1
                low, high = self.backoff
                delay = min(high, low * 2 ** (failures - 1))
                delay = random.uniform(delay / 2, delay)  # jitter: a fleet must not reconnect in lockstep
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    # The server said when (a 429 while its storage re-initializes): believe it.
                    delay = min(high, float(retry_after)) * random.uniform(1.0, 1.2)
                self._log.warning("list/watch failed; retrying", error=repr(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
            except Exception:
                # Unknown trouble (a bug, a malformed event): never let the informer die.
                failures += 1
                self._log.exception("informer loop error; re-listing")
                need_list = True
                await asyncio.sleep(min(self.backoff[1], self.backoff[0] * 2 ** failures))

    def shape(self, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` as this informer stores it (transformed, strings interned); may change ``obj``."""
        return self._prepare(obj)

    def _prepare(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.setdefault("apiVersion", self.kind.api_version)
        obj.setdefault("kind", self.kind.kind)
        kept = self.transform(obj) if self.transform else obj
        # The cache holds its objects for the life of the process: their repeated strings once.
        result: dict[str, Any] = intern_strings(kept)
        return result

    async def _list_and_replace(self) -> None:
        try:
            listed = await self.client.list(self.kind, self.namespace, label_selector=self.label_selector,
                                            field_selector=self.field_selector, page_size=self.page_size)
        except GoneError:
            # The continue token expired mid-pagination: take one unpaginated snapshot.
            listed = await self.client.list(self.kind, self.namespace, label_selector=self.label_selector,
                                            field_selector=self.field_selector, page_size=0)
        self.lists += 1
        fresh = {object_key(obj): self._prepare(obj) for obj in listed.items}
        for key in self.store:
            if key not in fresh:
                old = self.store.delete(key)
                if old is not None:
                    # We never saw its DELETED event: the last state we knew is all there is.
                    self._emit_delete(old, True)
        for obj in fresh.values():
            old = self.store.upsert(obj)
            if old is None:
                self._emit_add(obj)
            elif _rv(old) != _rv(obj):
                self._emit_update(old, obj)
        self._resource_version = listed.resource_version
        if not self._synced.is_set():
            self._log.debug("informer synced", objects=len(self.store))
            self._synced.set()

    async def _watch(self) -> bool:
        """Watch until the server ends the stream; True if any event came."""
        self.watches += 1
        got = False
        timeout = random.randint(*self.watch_timeout)
        async for event in self.client.watch(self.kind, self.namespace, resource_version=self._resource_version,
                                             label_selector=self.label_selector,
                                             field_selector=self.field_selector, timeout_seconds=timeout):
            got = True
            if event.type == "ERROR":
                status = event.object
                raise error_from_response(int(status.get("code") or 500), status)
            obj = event.object
            rv = _rv(obj)
            if event.type == "BOOKMARK":
                self._resource_version = rv or self._resource_version
                continue
            obj = self._prepare(obj)
            key = object_key(obj)
            if event.type in ("ADDED", "MODIFIED"):
                old = self.store.upsert(obj)
                if old is None:
                    self._emit_add(obj)
                else:
                    self._emit_update(old, obj)
            elif event.type == "DELETED":
                self.store.delete(key)
                self._emit_delete(obj, False)
            self._resource_version = rv or self._resource_version
        return got

    async def _resync_loop(self) -> None:
        assert self.resync_period
        while True:
            await asyncio.sleep(self.resync_period)
            if self.has_synced:
                for _, obj in self.store.items():
                    self._emit_update(obj, obj)
