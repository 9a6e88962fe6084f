"""Label selectors, parsed once and matched against dicts (the cache filters with them).

Supports the string syntax the API server accepts: ``a=b``, ``a==b``, ``a!=b``,
``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``, comma-separated; or a dict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache

__all__ = ["LabelSelector", "parse_selector"]

Requirement = Callable[[Mapping[str, str]], bool]
_SET_RE = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _requirement(term: str) -> Requirement:
    for op in ("!=", "==", "="):
        if op in term and "(" not in term:
            key, value = (part.strip() for part in term.split(op, 1))
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    match = _SET_RE.match(term)
    if not match:
        raise ValueError(f"cannot parse label selector term {term!r}")
    negate, key, op, values = match.groups()
    if op:
        allowed = frozenset(v.strip() for v in values.split(",") if v.strip())
        if op == "in":
            return lambda labels: labels.get(key) in allowed
        return lambda labels: labels.get(key) not in allowed
    if negate:
        return lambda labels: key not in labels
    return lambda labels: key in labels


def _equality(term: str) -> tuple[str, str] | None:
    if "!=" in term or "(" in term:
        return None
    for op in ("==", "="):
        if op in term:
            key, value = (part.strip() for part in term.split(op, 1))
            return key, value
    return None


class LabelSelector:
    """A parsed selector; ``matches(labels)`` is all requirements at once (AND)."""

    def __init__(self, selector: str | Mapping[str, str] | None):
        if selector is None:
            self.text = ""
        elif isinstance(selector, str):
            self.text = selector
        else:
            self.text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        terms = _split(self.text)
        self._requirements = [_requirement(term) for term in terms]
        self.equalities: tuple[tuple[str, str], ...] = tuple(
            pair for pair in (_equality(term) for term in terms) if pair is not None)
        """The ``key=value`` terms: a store narrows its candidates with its label index on these."""

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(requirement(labels) for requirement in self._requirements)

    @property
    def empty(self) -> bool:
        return not self._requirements


@lru_cache(maxsize=256)
def _parse_text(text: str) -> LabelSelector:
    return LabelSelector(text)


def parse_selector(selector: str | Mapping[str, str] | None) -> LabelSelector:
    """Parse (cached for strings, which reconcilers repeat on every call)."""
    if isinstance(selector, str):
        return _parse_text(selector)
    return LabelSelector(selector)
