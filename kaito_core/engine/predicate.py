"""Predicates: which informer events are worth a reconcile.

A predicate sees the event and says yes or no; a controller runs the
reconcile only if all of its predicates say yes. Typical use: react to a
spec change (``generation_changed``) but not to our own status writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kaito_core.engine.objects import meta

__all__ = [
    "Predicate",
    "and_",
    "annotations_changed",
    "generation_changed",
    "labels_changed",
    "not_",
    "not_just_a_heartbeat",
    "or_",
    "predicate",
    "resource_version_changed",
]

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Predicate:
    """Filters per event type; each returns True to let the event through."""

    create: Callable[[Obj], bool] = lambda obj: True
    update: Callable[[Obj, Obj], bool] = lambda old, new: True
    delete: Callable[[Obj], bool] = lambda obj: True
    name: str = "predicate"


def predicate(func: Callable[[Obj], bool], name: str | None = None) -> Predicate:
    """A predicate applying one test to the object of every event (the new one for updates)."""
    return Predicate(create=func, update=lambda old, new: func(new), delete=func,
                     name=name or str(getattr(func, "__name__", "predicate")))


def _update_only(test: Callable[[Obj, Obj], bool], name: str) -> Predicate:
    return Predicate(update=test, name=name)


# Updates that change nothing but status/metadata bump resourceVersion, not generation.
generation_changed = _update_only(lambda old, new: meta(old).generation != meta(new).generation,
                                  "generation_changed")
labels_changed = _update_only(lambda old, new: meta(old).labels != meta(new).labels, "labels_changed")
annotations_changed = _update_only(lambda old, new: meta(old).annotations != meta(new).annotations,
                                   "annotations_changed")
# Drops the informer's periodic resync (old is new) while keeping every real update.
resource_version_changed = _update_only(
    lambda old, new: meta(old).resource_version != meta(new).resource_version,
    "resource_version_changed")


def _without_heartbeats(obj: Obj) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    status = dict(obj.get("status") or {})
    if status.get("conditions"):
        status["conditions"] = [{k: v for k, v in cond.items() if k != "lastHeartbeatTime"}
                                for cond in status["conditions"]]
    return {**obj, "metadata": meta, "status": status}


# A Node posts its status every few seconds to minutes; an update that moves nothing but the
# conditions' lastHeartbeatTime is no news to a controller that watches Nodes.
not_just_a_heartbeat = _update_only(lambda old, new: _without_heartbeats(old) != _without_heartbeats(new),
                                    "not_just_a_heartbeat")


def or_(*preds: Predicate) -> Predicate:
    """Passes if any passes (e.g. ``or_(generation_changed, labels_changed)``)."""
    return Predicate(
        create=lambda obj: any(p.create(obj) for p in preds),
        update=lambda old, new: any(p.update(old, new) for p in preds),
        delete=lambda obj: any(p.delete(obj) for p in preds),
        name="or(" + ",".join(p.name for p in preds) + ")",
    )


def and_(*preds: Predicate) -> Predicate:
    return Predicate(
        create=lambda obj: all(p.create(obj) for p in preds),
        update=lambda old, new: all(p.update(old, new) for p in preds),
        delete=lambda obj: all(p.delete(obj) for p in preds),
        name="and(" + ",".join(p.name for p in preds) + ")",
    )


def not_(pred: Predicate) -> Predicate:
    return Predicate(
        create=lambda obj: not pred.create(obj),
        update=lambda old, new: not pred.update(old, new),
        delete=lambda obj: not pred.delete(obj),
        name=f"not({pred.name})",
    )
