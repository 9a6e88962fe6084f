"""Index functions: map an object to the values it is found under in the store.

An index answers "which objects have value V" in O(1) instead of a scan:
"children of owner uid U" is the query every owner-watching controller makes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "INDEX_CONTROLLER_UID",
    "INDEX_LABEL",
    "INDEX_NAMESPACE",
    "INDEX_OWNER_UID",
    "IndexFunc",
    "controller_uid_index",
    "label_index",
    "label_pair_index",
    "namespace_index",
    "owner_uid_index",
]

IndexFunc = Callable[[Mapping[str, Any]], Iterable[str]]

INDEX_NAMESPACE = "namespace"
INDEX_OWNER_UID = "owner-uid"
INDEX_CONTROLLER_UID = "controller-uid"
INDEX_LABEL = "label"


def namespace_index(obj: Mapping[str, Any]) -> Iterable[str]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return (namespace,) if namespace else ()


def owner_uid_index(obj: Mapping[str, Any]) -> Iterable[str]:
    """Every owner's uid (ownerReferences), controller or not."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return tuple(str(ref["uid"]) for ref in refs if ref.get("uid"))


def controller_uid_index(obj: Mapping[str, Any]) -> Iterable[str]:
    """The uid of the one ownerReference with ``controller: true``, if any."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return tuple(str(ref["uid"]) for ref in refs if ref.get("controller") and ref.get("uid"))


def label_pair_index(obj: Mapping[str, Any]) -> Iterable[str]:
    """Every label as ``key=value`` (neither may contain ``=``): what makes a label-selector
    read of the cache cost the size of the answer, not the size of the kind."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return tuple(f"{key}={value}" for key, value in labels.items())


def label_index(key: str) -> IndexFunc:
    """An index on the value of one label, e.g. ``label_index("kaito.sh/workspace")``."""

    def index(obj: Mapping[str, Any]) -> Iterable[str]:
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(key)
        return (value,) if value is not None else ()

    index.__name__ = f"label_index[{key}]"
    return index
