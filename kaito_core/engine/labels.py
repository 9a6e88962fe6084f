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


def _requirement(term: str) -> tuple[Requirement, tuple[str, str] | None]:
    """The test for one term, and ``(key, value)`` when the term is an equality."""
    equality = None if "(" in term else next((op for op in ("!=", "==", "=") if op in term), None)
    if equality is not None:
        key, value = (part.strip() for part in term.split(equality, 1))
        if equality == "!=":
            return (lambda labels: labels.get(key) != value), None
        return (lambda labels: labels.get(key) == value), (key, value)
    match = _SET_RE.match(term)
    if not match:
        raise ValueError(f"cannot parse label selector term {term!r}")
    negate, key, op, values = match.groups()
    if op:
        allowed = frozenset(v.strip() for v in values.split(",") if v.strip())
        if op == "in":
            return (lambda labels: labels.get(key) in allowed), None
        return (lambda labels: labels.get(key) not in allowed), None
    if negate:
        return (lambda labels: key not in labels), None
    return (lambda labels: key in labels), None


class LabelSelector:
    """A parsed selector; ``matches(labels)`` is all requirements at once (AND)."""

    def __init__(self, selector: str | Mapping[str, str] | None):
        if selector is None:
            self.text = ""
        elif isinstance(selector, str):
            self.text = selector
        else:
            self.text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        parsed = [_requirement(term) for term in _split(self.text)]
        self._requirements = [test for test, _ in parsed]
        self.equalities: tuple[tuple[str, str], ...] = tuple(pair for _, pair in parsed if pair is not None)
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
