"""Read-your-own-writes for the cache (client-go's ``MutationCache``, for ``get``).

A reconciler that writes an object and is woken again before the watch has brought that write
back reads the version *before* it from the informer: its next update carries a stale
resourceVersion and costs a 409 (a wasted write, and a retry), and a decision made on the old
version (an Event, a status message) is made twice. So what our own writes return is kept here
until the informer has caught up, and :meth:`SharedCache.get` answers with whichever is newer.

Only ``get`` is answered from here: ``list`` and indexes stay the informer's, a snapshot that is
consistent with itself. An entry goes when the informer's copy reaches its resourceVersion, when
the informer sees the object deleted, or after ``ttl`` seconds (a watch that never brings it
back, e.g. a delete the informer missed, cannot keep it alive). resourceVersions are compared as
integers, as the apiserver's etcd storage writes them; where one is not, nothing is kept.
"""

from __future__ import annotations

import copy as copylib
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["OwnWrites", "newer_resource_version"]

Key = tuple[str | None, str]


def _rv(obj: Mapping[str, Any] | None) -> int | None:
    if obj is None:
        return None
    try:
        return int(str((obj.get("metadata") or {}).get("resourceVersion", "")))
    except ValueError:
        return None


def newer_resource_version(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """True when ``a`` is a later version of the object than ``b`` (both with integer versions)."""
    ra, rb = _rv(a), _rv(b)
    return ra is not None and (rb is None or ra > rb)


class OwnWrites:
    """The newest object each of our writes returned, per (namespace, name), for one kind."""

    def __init__(self, *, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._objects: dict[Key, tuple[float, dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def record(self, key: Key, obj: dict[str, Any]) -> None:
        """Keep ``obj`` (already in the cache's shape) unless we hold a newer version of it."""
        if _rv(obj) is None:
            return
        held = self._objects.get(key)
        if held is None or newer_resource_version(obj, held[1]):
            self._objects[key] = (self.clock(), obj)

    def forget(self, key: Key) -> None:
        self._objects.pop(key, None)

    def newest(self, key: Key, cached: dict[str, Any] | None, *, copy: bool = True) -> dict[str, Any] | None:
        """``cached`` (the informer's copy), or ours when ours is a later version; drops ours once the
        informer has caught up or it has outlived ``ttl``."""
        held = self._objects.get(key)
        if held is None:
            return cached
        at, ours = held
        if self.clock() - at > self.ttl or not newer_resource_version(ours, cached):
            del self._objects[key]
            return cached
        return copylib.deepcopy(ours) if copy else ours
