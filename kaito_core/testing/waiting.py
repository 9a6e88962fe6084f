"""Waiting for the world to converge, the way level-based controllers are tested."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["eventually"]


async def eventually(check: Callable[[], Awaitable[Any] | Any], timeout: float, interval: float = 0.2,
                     message: str = "condition", describe: Callable[[], str] | None = None) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that.

    Raises AssertionError after ``timeout`` seconds, naming ``message`` and, when
    given, what ``describe()`` says about the state at that moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            extra = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"{message} not reached within {timeout}s{extra}")
        await asyncio.sleep(interval)
