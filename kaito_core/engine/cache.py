"""SharedCache: one informer per (kind, namespace, selectors), shared by every controller.

Reconcilers read here (``cache.get``/``list``/``by_index``), never from the
API server: reads are free, and every controller sees the same snapshot. ``get`` also
sees what our own writes returned before the watch brings it back (:mod:`.own_writes`;
the Manager wires :meth:`SharedCache.observe_write` to its client).
"""

from __future__ import annotations

import asyncio
import builtins
import copy as copylib
from collections.abc import Mapping
from typing import Any

from kaito_core.engine.client import Client
from kaito_core.engine.indexers import IndexFunc
from kaito_core.engine.informer import FuncHandler, Informer
from kaito_core.engine.labels import parse_selector
from kaito_core.engine.own_writes import OwnWrites
from kaito_core.engine.resources import ResourceKind
from kaito_core.engine.transforms import Transform, strip_managed_fields

__all__ = ["CacheNotWatchingError", "InformerKey", "SharedCache"]

InformerKey = tuple[ResourceKind, str | None, str | None, str | None]


class CacheNotWatchingError(LookupError):
    """A read for a kind nothing asked the cache to watch."""


class SharedCache:
    """Creates, shares, starts and stops informers; answers reads from their stores.

    ``namespace`` limits every informer to one namespace; ``selectors`` gives a
    kind a label selector (cache only what you own, e.g. ``{POD: "app=x"}``);
    ``transforms`` gives a kind what its objects are reduced to before they are stored
    (:func:`~kaito_core.engine.transforms.keep_fields`; the default drops only managedFields).
    """

    def __init__(self, client: Client, *, namespace: str | None = None, resync_period: float | None = None,
                 selectors: Mapping[ResourceKind, str] | None = None, page_size: int = 500,
                 transforms: Mapping[ResourceKind, Transform] | None = None):
        self.client = client
        self.namespace = namespace
        self.resync_period = resync_period
        self.selectors = dict(selectors or {})
        self.page_size = page_size
        self._transforms: dict[ResourceKind, Transform] = dict(transforms or {})
        self._informers: dict[InformerKey, Informer] = {}
        self._primary: dict[ResourceKind, Informer] = {}
        self._own: dict[ResourceKind, OwnWrites] = {}
        self._started = False

    def informer(self, kind: ResourceKind, *, namespace: str | None = None, label_selector: str | None = None,
                 field_selector: str | None = None) -> Informer:
        """The shared informer for these parameters (created and, if the cache runs, started)."""
        namespace = namespace or self.namespace
        label_selector = label_selector or self.selectors.get(kind)
        key: InformerKey = (kind, namespace, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(self.client, kind, namespace=namespace, label_selector=label_selector,
                                field_selector=field_selector, resync_period=self.resync_period,
                                page_size=self.page_size, transform=self.transform_for(kind))
            self._informers[key] = informer
            # The first informer of a kind answers cache reads for that kind.
            self._primary.setdefault(kind, informer)
            if self._started:
                informer.start()
        return informer

    def transform_for(self, kind: ResourceKind) -> Transform:
        return self._transforms.get(kind, strip_managed_fields)

    def set_transform(self, kind: ResourceKind, transform: Transform) -> None:
        """Reduce every cached ``kind`` object with ``transform`` (before the cache starts).

        One transform per kind: what it drops is gone for every reader, so it declares the union of
        what they read. Setting the same one again is a no-op (each controller that reads the kind
        may declare it); a different one, or one after the kind's informer started, is refused.
        """
        current = self._transforms.get(kind)
        if current is transform:
            return
        if current is not None:
            raise ValueError(f"the cache of {kind} already keeps {getattr(current, '__name__', current)}; "
                             "declare one transform per kind with the union of the fields its readers read")
        started = [i for i in self._informers.values() if i.kind == kind and (i.running or i.has_synced)]
        if started:
            raise RuntimeError(f"the cache of {kind} is already filled; set its transform before the "
                               "manager (or the cache) starts")
        self._transforms[kind] = transform
        for informer in self._informers.values():
            if informer.kind == kind:
                informer.transform = transform

    def add_index(self, kind: ResourceKind, name: str, func: IndexFunc) -> None:
        """Add a custom index on a kind (its informer is created if needed)."""
        self._for_read(kind, create=True).store.add_indexer(name, func)

    @property
    def informers(self) -> builtins.list[Informer]:
        return list(self._informers.values())

    # -- lifecycle

    async def start(self) -> None:
        self._started = True
        for informer in self._informers.values():
            informer.start()

    async def stop(self) -> None:
        self._started = False
        await asyncio.gather(*(informer.stop() for informer in self._informers.values()))

    @property
    def has_synced(self) -> bool:
        return all(informer.has_synced for informer in self._informers.values())

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        results = await asyncio.gather(*(i.wait_for_sync(timeout) for i in self._informers.values()))
        return all(results)

    async def ensure(self, kind: ResourceKind, timeout: float | None = 60.0) -> Informer:
        """Watch a kind from now on and wait for its first LIST (for ad-hoc reads)."""
        informer = self._for_read(kind, create=True)
        informer.start()
        if not await informer.wait_for_sync(timeout):
            raise TimeoutError(f"cache for {kind} did not sync within {timeout}s")
        return informer

    # -- reads

    def _for_read(self, kind: ResourceKind, create: bool = False) -> Informer:
        informer = self._primary.get(kind)
        if informer is None:
            if not create:
                raise CacheNotWatchingError(
                    f"the cache does not watch {kind}: add it to a controller (for_/owns/watches) "
                    "or call `await cache.ensure(kind)` first")
            informer = self.informer(kind)
        return informer

    def get(self, kind: ResourceKind, namespace: str | None, name: str, *,
            copy: bool = True) -> dict[str, Any] | None:
        """The cached object or None (a copy unless ``copy=False``: then do not mutate it); the
        version one of our own writes returned when the informer has not caught up with it yet."""
        cached = self._for_read(kind).store.get(namespace, name, copy=copy)
        own = self._own.get(kind)
        return cached if own is None else own.newest((namespace or None, name), cached, copy=copy)

    def observe_write(self, kind: ResourceKind, obj: Mapping[str, Any]) -> None:
        """Remember what a write of ours returned, for ``get`` until the watch brings it (or newer).

        Only for a kind the cache watches, and only an object its primary informer would hold
        (its namespace, its label selector; none with a field selector, which we cannot judge)."""
        informer = self._primary.get(kind)
        if informer is None or informer.field_selector:
            return
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace") or None, meta.get("name")
        if not name or (kind.namespaced and informer.namespace and informer.namespace != namespace):
            return
        if informer.label_selector and not parse_selector(informer.label_selector).matches(meta.get("labels") or {}):
            return
        own = self._own.get(kind)
        if own is None:
            own = self._own[kind] = OwnWrites()

            def deleted(gone: dict[str, Any], _unknown: bool, own: OwnWrites = own) -> None:
                # A delete the informer sees ends what we remembered (a recreate gets a new entry).
                gone_meta = gone.get("metadata") or {}
                own.forget((gone_meta.get("namespace") or None, str(gone_meta.get("name", ""))))

            informer.add_handler(FuncHandler(on_delete=deleted))
        own.record((namespace, str(name)), informer.shape(copylib.deepcopy(dict(obj))))

    def list(self, kind: ResourceKind, namespace: str | None = None, *,
             label_selector: str | Mapping[str, str] | None = None, copy: bool = True) -> builtins.list[dict[str, Any]]:
        return self._for_read(kind).store.list(namespace, label_selector, copy=copy)

    def by_index(self, kind: ResourceKind, index: str, value: str, *,
                 copy: bool = True) -> builtins.list[dict[str, Any]]:
        return self._for_read(kind).store.by_index(index, value, copy=copy)
