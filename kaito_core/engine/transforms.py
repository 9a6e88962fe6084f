"""Cache transforms: keep only the fields the readers of a kind read (controller-runtime's
``cache.Options.ByObject[...].Transform``).

An informer holds every object of its kind for the life of the process, and a Pod or a Node is
mostly what no controller reads: a Pod's whole spec, a Node's image list, addresses and
``nodeInfo``. :func:`keep_fields` makes a transform from a declaration of what to keep::

    keep_fields("metadata", "spec.taints", "status.conditions[].type", "status.allocatable")

Each path names a field by its keys from the object's root; a segment ending in ``[]`` is a
list, and the rest of the path applies to each of its elements. A path that ends keeps that
value whole. ``apiVersion`` and ``kind`` are always kept, ``metadata.managedFields`` never is.
What the transform drops is gone for every reader of that cache, so declare the union of what
they read; a reader that needs more reads the API server instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FieldShape", "Transform", "intern_strings", "keep_fields", "strip_managed_fields"]

Transform = Callable[[dict[str, Any]], dict[str, Any]]

_ALWAYS = ("apiVersion", "kind")


def strip_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop ``metadata.managedFields``: often half an object's size, and no reconciler reads it."""
    meta = obj.get("metadata")
    if meta is not None:
        meta.pop("managedFields", None)
    return obj


#: Strings up to this long are interned: keys, names, label values, condition types and reasons
#: (what repeats across a kind's objects); a longer one (a message, a JSON annotation) rarely does.
INTERN_MAX_LENGTH = 64


def intern_strings(obj: Any) -> Any:
    """``obj`` with every dict key and every short string value interned (rebuilt, not copied twice).

    Each watch event and LIST page is parsed afresh, so N cached objects hold N copies of
    "metadata", "conditions", "True", "kaito.sh/workspace", their namespace...: half the cache's
    memory at a few hundred Workspaces. Interned, each is held once; objects cached are never
    mutated in place (readers get copies), so sharing the strings is safe.
    """
    if isinstance(obj, dict):
        return {sys.intern(k) if isinstance(k, str) else k: intern_strings(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [intern_strings(v) for v in obj]
    if isinstance(obj, str) and len(obj) <= INTERN_MAX_LENGTH:
        return sys.intern(obj)
    return obj


@dataclass(slots=True)
class FieldShape:
    """The fields to keep under one key: ``whole`` keeps the value as it is; else ``children``
    (of a map, or, when ``each``, of every element of a list)."""

    whole: bool = False
    each: bool = False
    children: dict[str, FieldShape] = field(default_factory=dict)

    def add(self, segments: list[str], path: str) -> None:
        if self.whole:
            return  # kept whole already: a deeper path adds nothing
        if not segments:
            self.whole, self.children = True, {}
            return
        head, rest = segments[0], segments[1:]
        each = head.endswith("[]")
        key = head[:-2] if each else head
        if not key or "[" in key or "]" in key:
            raise ValueError(f"cache field path {path!r}: segment {head!r} is not a key or a key[] "
                             "(write e.g. 'status.containerStatuses[].state')")
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = FieldShape(each=each)
        elif child.each != each and rest and not child.whole:  # (kept whole, it is neither)
            raise ValueError(f"cache field path {path!r}: {key!r} is used both as a list ({key}[]) and "
                             "as a map; use one")
        child.add(rest, path)

    def paths(self, prefix: str = "") -> list[str]:
        """The declaration back as sorted paths (for messages and tests)."""
        if self.whole:
            return [prefix]
        out: list[str] = []
        for key, child in self.children.items():
            name = f"{prefix}.{key}" if prefix else key
            out += child.paths(name + ("[]" if child.each else ""))
        return sorted(out)

    def project(self, value: Any) -> Any:
        """``value`` with only the declared fields (a value of another type than declared is kept
        as it is: the reader's own checks deal with a malformed object)."""
        if self.whole:
            return value
        if self.each:
            if not isinstance(value, list):
                return value
            return [self._project_map(item) for item in value]
        return self._project_map(value)

    def _project_map(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out: dict[str, Any] = {}
        for key, child in self.children.items():
            if key in value:
                out[key] = child.project(value[key])
        return out


def keep_fields(*paths: str) -> Transform:
    """A transform keeping only ``paths`` (see the module docstring) of every object."""
    shape = compile_fields(paths)

    def transform(obj: dict[str, Any]) -> dict[str, Any]:
        strip_managed_fields(obj)
        kept: dict[str, Any] = shape.project(obj)
        for key in _ALWAYS:
            if key in obj:
                kept[key] = obj[key]
        return kept

    transform.__qualname__ = transform.__name__ = f"keep_fields({', '.join(shape.paths())})"
    return transform


def compile_fields(paths: Iterable[str]) -> FieldShape:
    """The :class:`FieldShape` of a declaration; a malformed path raises ``ValueError`` naming it."""
    shape = FieldShape()
    for path in paths:
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"cache field path {path!r}: expected a dotted path like 'status.conditions'")
        shape.add(path.strip().split("."), path)
    if not shape.children and not shape.whole:
        raise ValueError("keep_fields needs at least one path (to keep everything, use no transform)")
    metadata = shape.children.get("metadata")
    if metadata is None or not metadata.whole:
        # The store keys and indexes by metadata, the informer resumes by its resourceVersion, the
        # handlers map owners and labels: a transform keeps all of it.
        raise ValueError(f"cache fields {list(paths)!r} must keep 'metadata' whole (the store, the informer "
                         "and the event handlers read it); add the path 'metadata'")
    return shape
