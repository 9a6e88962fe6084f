"""Waiting for the world to converge, the way level-based controllers are tested, and reading
the conditions it converges to from plain object dicts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = ["condition", "condition_is_true", "eventually"]


async def eventually(check: Callable[[], Awaitable[Any] | Any], timeout: float, interval: float = 0.2,
                     message: str = "condition", describe: Callable[[], str] | None = None,
                     *, report_every: float | None = None) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that.

    Raises AssertionError after ``timeout`` seconds, naming ``message`` and, when
    given, what ``describe()`` says about the state at that moment. With ``report_every``
    (and ``describe``), a line on stdout says what it still waits for every so many seconds,
    so a long wait in a slow suite shows where it stands.
    """
    start = last_report = time.monotonic()
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        now = time.monotonic()
        if now - start > timeout:
            extra = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"{message} not reached within {timeout}s{extra}")
        if describe is not None and report_every is not None and now - last_report > report_every:
            last_report = now
            print(f"  [{now - start:5.0f}s] waiting for {message}: {describe()[:600]}", flush=True)
        await asyncio.sleep(interval)


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The ``status.conditions`` entry of ``type_`` in an object dict (a copy), or None."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def condition_is_true(obj: Mapping[str, Any] | None, type_: str) -> bool:
    """True when the object has condition ``type_`` with status "True"."""
    cond = condition(obj, type_)
    return cond is not None and cond.get("status") == "True"
