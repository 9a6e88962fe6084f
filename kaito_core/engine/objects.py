"""Read-only views over the plain dicts the engine hands out (kopf's ``Meta``, ``Spec``, ``Status``).

Objects stay dicts (the cache stores what the API server sent); a view only reads, so
``.get("metadata") or {}`` chains do not repeat in every module::

    from kaito_core.engine.objects import conditions_of, meta

    if meta(node).deleting or "example.com/finalizer" not in meta(obj).finalizers: ...
    ready = condition_of(node, "Ready")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Meta", "condition_of", "conditions_of", "meta", "spec_of", "status_of"]

_EMPTY: Mapping[str, Any] = {}


def _section(obj: Mapping[str, Any] | None, key: str) -> Mapping[str, Any]:
    value = (obj or _EMPTY).get(key)
    return value if isinstance(value, Mapping) else _EMPTY


class Meta:
    """``metadata`` of an object dict, read-only; every field answers even when absent."""

    __slots__ = ("_meta",)

    def __init__(self, obj: Mapping[str, Any] | None):
        self._meta = _section(obj, "metadata")

    @property
    def name(self) -> str:
        return str(self._meta.get("name") or "")

    @property
    def namespace(self) -> str | None:
        value = self._meta.get("namespace")
        return str(value) if value else None

    @property
    def uid(self) -> str | None:
        value = self._meta.get("uid")
        return str(value) if value else None

    @property
    def resource_version(self) -> str | None:
        value = self._meta.get("resourceVersion")
        return str(value) if value else None

    @property
    def generation(self) -> int | None:
        value = self._meta.get("generation")
        return int(value) if value is not None else None

    @property
    def labels(self) -> Mapping[str, str]:
        return self._meta.get("labels") or _EMPTY

    @property
    def annotations(self) -> Mapping[str, str]:
        return self._meta.get("annotations") or _EMPTY

    @property
    def finalizers(self) -> Sequence[str]:
        return tuple(self._meta.get("finalizers") or ())

    @property
    def owner_references(self) -> Sequence[Mapping[str, Any]]:
        return tuple(self._meta.get("ownerReferences") or ())

    @property
    def creation_timestamp(self) -> str | None:
        value = self._meta.get("creationTimestamp")
        return str(value) if value else None

    @property
    def deletion_timestamp(self) -> str | None:
        value = self._meta.get("deletionTimestamp")
        return str(value) if value else None

    @property
    def deleting(self) -> bool:
        """The object has a deletionTimestamp (finalizers hold it)."""
        return bool(self._meta.get("deletionTimestamp"))


def meta(obj: Mapping[str, Any] | None) -> Meta:
    """The metadata view of ``obj`` (an empty one for None)."""
    return Meta(obj)


def spec_of(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``obj["spec"]``, or an empty mapping."""
    return _section(obj, "spec")


def status_of(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``obj["status"]``, or an empty mapping."""
    return _section(obj, "status")


def conditions_of(obj: Mapping[str, Any] | None) -> Sequence[Mapping[str, Any]]:
    """``status.conditions`` of ``obj`` (empty when absent)."""
    return tuple(status_of(obj).get("conditions") or ())


def condition_of(obj: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    """The first condition of that type in ``status.conditions``, or None."""
    return next((c for c in conditions_of(obj) if c.get("type") == type_), None)
