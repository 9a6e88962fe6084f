"""ControllerBuilder: the readable way to declare what a controller watches.

::

    controller = (Controller.for_(WORKSPACE, generation_changed)
                  .owns(STATEFULSET)
                  .watches(NODE, nodes_to_workspaces)
                  .with_workers(5)
                  .build(WorkspaceReconciler(...)))
    manager.add(controller)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Self

from kaito_core.engine.controller import Controller, Watch
from kaito_core.engine.handler import MapFunc
from kaito_core.engine.predicate import Predicate
from kaito_core.engine.ratelimit import RateLimiter
from kaito_core.engine.reconcile import Reconciler
from kaito_core.engine.resources import ResourceKind

__all__ = ["ControllerBuilder"]


class ControllerBuilder:
    def __init__(self, kind: ResourceKind, predicates: Sequence[Predicate] = ()):
        self._kind = kind
        self._for_predicates = list(predicates)
        self._watches: list[Watch] = []
        self._workers = 1
        self._name: str | None = None
        self._rate_limiter: Callable[[], RateLimiter] | None = None
        self._timeout: float | None = None

    def owns(self, kind: ResourceKind, *predicates: Predicate) -> Self:
        """Reconcile the owner when an object of ``kind`` it controls (ownerReference) changes."""
        self._watches.append(Watch(kind, "owner", predicates=predicates))
        return self

    def watches(self, kind: ResourceKind, map_fn: MapFunc, *predicates: Predicate,
                label_selector: str | None = None) -> Self:
        """Reconcile the Requests ``map_fn(obj)`` returns when an object of ``kind`` changes."""
        self._watches.append(Watch(kind, "map", map_fn, predicates, label_selector))
        return self

    def with_predicates(self, *predicates: Predicate) -> Self:
        """Filters for the events of the ``for_`` kind."""
        self._for_predicates.extend(predicates)
        return self

    def with_workers(self, workers: int) -> Self:
        """Concurrent reconciles (never two on the same key)."""
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._workers = workers
        return self

    def named(self, name: str) -> Self:
        """The controller name in logs and metrics (default: the kind, lower case)."""
        self._name = name
        return self

    def with_rate_limiter(self, factory: Callable[[], RateLimiter]) -> Self:
        self._rate_limiter = factory
        return self

    def with_reconcile_timeout(self, seconds: float) -> Self:
        """Cancel a reconcile that runs longer (it is then retried with backoff)."""
        self._timeout = seconds
        return self

    def build(self, reconciler: Reconciler) -> Controller:
        watches = [Watch(self._kind, "self", predicates=tuple(self._for_predicates)), *self._watches]
        return Controller(name=self._name or self._kind.kind.lower(), kind=self._kind, reconciler=reconciler,
                          watches=watches, workers=self._workers, rate_limiter=self._rate_limiter,
                          reconcile_timeout=self._timeout)

    complete = build
