"""The reconciler contract: a key in, a Result out, level-based."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["Reconciler", "Request", "Result", "TerminalError", "soonest"]


@dataclass(frozen=True, slots=True)
class Request:
    """Which object to reconcile. Just the key: the reconciler reads the current state from the cache."""

    namespace: str | None
    name: str

    @classmethod
    def for_object(cls, obj: Mapping[str, Any]) -> Request:
        meta = obj.get("metadata") or {}
        return cls(meta.get("namespace") or None, str(meta.get("name", "")))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class Result:
    """What to do next. ``requeue_after`` re-runs after that many seconds (periodic checks);
    ``requeue`` re-runs soon with rate-limited backoff. The default means "done until something changes"."""

    requeue_after: float | None = None
    requeue: bool = False


def soonest(*results: Result) -> Result:
    """The results of sub-reconcilers as one: the shortest ``requeue_after`` of those that ask for
    one, ``requeue`` if any asks for it (Karpenter's ``result.Min``)."""
    waits = [r.requeue_after for r in results if r.requeue_after]
    return Result(requeue_after=min(waits) if waits else None, requeue=any(r.requeue for r in results))


class TerminalError(Exception):
    """A failure retrying cannot fix (invalid spec...): logged, reported as an Event, not retried.

    The object is reconciled again when it changes.
    """

    def __init__(self, message: str, *, reason: str = "ReconcileFailed"):
        super().__init__(message)
        self.reason = reason


@runtime_checkable
class Reconciler(Protocol):
    async def reconcile(self, request: Request) -> Result: ...
