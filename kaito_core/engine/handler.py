"""Event handlers that turn informer events into queue keys.

* :class:`EnqueueForObject`: the object's own key (the kind a controller is ``for_``);
* :class:`EnqueueForOwner`: the key of the object's controller owner of a given
  kind (children a controller ``owns``), found from the ownerReference alone;
* :class:`EnqueueMapped`: any keys a function computes (``watches`` with a map function).

Predicates are applied here, before anything reaches the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from kaito_core.engine.predicate import Predicate
from kaito_core.engine.queue import WorkQueue
from kaito_core.engine.reconcile import Request
from kaito_core.engine.resources import ResourceKind

__all__ = ["EnqueueForObject", "EnqueueForOwner", "EnqueueMapped", "MapFunc", "controller_owner"]

log = structlog.get_logger("kaito_core.engine.handler")
MapFunc = Callable[[Mapping[str, Any]], Iterable[Request]]


def _group(api_version: str) -> str:
    """The API group of an apiVersion; an ownerReference may name another version of the same kind."""
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def controller_owner(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with ``controller: true`` (at most one exists)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return dict(ref)
    return None


class _Base:
    def __init__(self, queue: WorkQueue[Request], predicates: Sequence[Predicate] = ()):
        self.queue = queue
        self.predicates = tuple(predicates)

    def requests(self, obj: Mapping[str, Any]) -> Iterable[Request]:
        raise NotImplementedError

    def _enqueue(self, obj: Mapping[str, Any]) -> None:
        for request in self.requests(obj):
            self.queue.add(request)

    def on_add(self, obj: dict[str, Any]) -> None:
        if all(p.create(obj) for p in self.predicates):
            self._enqueue(obj)

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if all(p.update(old, new) for p in self.predicates):
            # An owner change moves the child: the old owner must hear about it too.
            self._enqueue(old)
            self._enqueue(new)

    def on_delete(self, obj: dict[str, Any], final_state_unknown: bool = False) -> None:
        if all(p.delete(obj) for p in self.predicates):
            self._enqueue(obj)


class EnqueueForObject(_Base):
    def requests(self, obj: Mapping[str, Any]) -> Iterable[Request]:
        return (Request.for_object(obj),)


class EnqueueForOwner(_Base):
    """Enqueue the controller owner if it is of ``owner_kind`` (same namespace as the child)."""

    def __init__(self, queue: WorkQueue[Request], owner_kind: ResourceKind, predicates: Sequence[Predicate] = (),
                 *, only_controller: bool = True):
        super().__init__(queue, predicates)
        self.owner_kind = owner_kind
        self.only_controller = only_controller

    def requests(self, obj: Mapping[str, Any]) -> Iterable[Request]:
        meta = obj.get("metadata") or {}
        refs = meta.get("ownerReferences") or ()
        namespace = meta.get("namespace") if self.owner_kind.namespaced else None
        out = []
        for ref in refs:
            if self.only_controller and not ref.get("controller"):
                continue
            group = _group(str(ref.get("apiVersion", "")))
            if ref.get("kind") == self.owner_kind.kind and group == self.owner_kind.group:
                out.append(Request(namespace or None, str(ref.get("name"))))
        return out


class EnqueueMapped(_Base):
    """Enqueue whatever ``map_fn(obj)`` returns (a map function that raises enqueues nothing)."""

    def __init__(self, queue: WorkQueue[Request], map_fn: MapFunc, predicates: Sequence[Predicate] = ()):
        super().__init__(queue, predicates)
        self.map_fn = map_fn

    def requests(self, obj: Mapping[str, Any]) -> Iterable[Request]:
        try:
            return list(self.map_fn(obj))
        except Exception:
            log.exception("watch map function failed", function=getattr(self.map_fn, "__name__", "?"))
            return ()
