"""The in-memory store behind an informer: objects by (namespace, name), plus indices.

Single-threaded by design: only the informer's task writes, reconcilers read
between awaits, so asyncio needs no locks here.
"""

from __future__ import annotations

import builtins
import copy as copylib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from kaito_core.engine.indexers import (
    INDEX_CONTROLLER_UID,
    INDEX_LABEL,
    INDEX_NAMESPACE,
    INDEX_OWNER_UID,
    IndexFunc,
    controller_uid_index,
    label_pair_index,
    namespace_index,
    owner_uid_index,
)
from kaito_core.engine.labels import parse_selector
from kaito_core.engine.resources import object_key

__all__ = ["DEFAULT_INDEXERS", "ObjectKey", "Store"]

ObjectKey = tuple[str | None, str]

DEFAULT_INDEXERS: dict[str, IndexFunc] = {
    INDEX_NAMESPACE: namespace_index,
    INDEX_OWNER_UID: owner_uid_index,
    INDEX_CONTROLLER_UID: controller_uid_index,
    INDEX_LABEL: label_pair_index,
}


class Store:
    """Objects (plain dicts) with secondary indices kept current on every write.

    Reads hand out deep copies by default so a reconciler that edits what it
    read cannot corrupt the cache; pass ``copy=False`` for read-only hot loops.
    """

    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None):
        self._items: dict[ObjectKey, dict[str, Any]] = {}
        self._indexers: dict[str, IndexFunc] = dict(DEFAULT_INDEXERS if indexers is None else indexers)
        self._indices: dict[str, dict[str, set[ObjectKey]]] = {name: {} for name in self._indexers}

    # -- indices

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        """Add an index (it is built over what the store already holds)."""
        if name in self._indexers:
            if self._indexers[name] is func:
                return
            raise ValueError(f"index {name!r} already exists")
        self._indexers[name] = func
        self._indices[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, func, key, obj)

    def _index_one(self, name: str, func: IndexFunc, key: ObjectKey, obj: Mapping[str, Any]) -> None:
        index = self._indices[name]
        for value in func(obj):
            index.setdefault(value, set()).add(key)

    def _unindex_one(self, name: str, func: IndexFunc, key: ObjectKey, obj: Mapping[str, Any]) -> None:
        index = self._indices[name]
        for value in func(obj):
            keys = index.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[value]

    # -- writes (the informer's)

    def upsert(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Insert or replace; returns the previous version."""
        key = object_key(obj)
        old = self._items.get(key)
        for name, func in self._indexers.items():
            if old is not None:
                self._unindex_one(name, func, key, old)
            self._index_one(name, func, key, obj)
        self._items[key] = obj
        return old

    def delete(self, key: ObjectKey) -> dict[str, Any] | None:
        old = self._items.pop(key, None)
        if old is not None:
            for name, func in self._indexers.items():
                self._unindex_one(name, func, key, old)
        return old

    # -- reads

    def get(self, namespace: str | None, name: str, *, copy: bool = True) -> dict[str, Any] | None:
        obj = self._items.get((namespace or None, name))
        if obj is None or not copy:
            return obj
        return copylib.deepcopy(obj)

    def list(self, namespace: str | None = None, label_selector: str | Mapping[str, str] | None = None, *,
             copy: bool = True) -> builtins.list[dict[str, Any]]:
        selector = parse_selector(label_selector)
        keys = self._narrow(namespace, selector.equalities)
        pairs: Iterable[tuple[ObjectKey, dict[str, Any]]] = (
            self._items.items() if keys is None else ((key, self._items[key]) for key in keys))
        candidates: Iterator[dict[str, Any]] = (
            obj for key, obj in pairs if namespace is None or key[0] == namespace)
        if not selector.empty:
            candidates = (obj for obj in candidates
                          if selector.matches((obj.get("metadata") or {}).get("labels")))
        result = list(candidates)
        return copylib.deepcopy(result) if copy else result

    def _narrow(self, namespace: str | None, equalities: tuple[tuple[str, str], ...]) -> set[ObjectKey] | None:
        """The smallest index bucket that holds every answer (None: no index applies, scan all);
        the caller still applies the namespace and the whole selector to what comes back."""
        buckets: builtins.list[set[ObjectKey]] = []
        if namespace is not None and INDEX_NAMESPACE in self._indices:
            buckets.append(self._indices[INDEX_NAMESPACE].get(namespace, set()))
        if equalities and INDEX_LABEL in self._indices:
            by_label = self._indices[INDEX_LABEL]
            buckets.extend(by_label.get(f"{key}={value}", set()) for key, value in equalities)
        return min(buckets, key=len) if buckets else None

    def by_index(self, index: str, value: str, *, copy: bool = True) -> builtins.list[dict[str, Any]]:
        if index not in self._indices:
            raise KeyError(f"no index {index!r}; known: {sorted(self._indices)}")
        result = [self._items[key] for key in self._indices[index].get(value, ())]
        return copylib.deepcopy(result) if copy else result

    def keys(self) -> builtins.list[ObjectKey]:
        return list(self._items)

    def items(self) -> Iterator[tuple[ObjectKey, dict[str, Any]]]:
        return iter(list(self._items.items()))

    def __iter__(self) -> Iterator[ObjectKey]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items
