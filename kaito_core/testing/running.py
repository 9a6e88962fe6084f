"""Running an engine :class:`~kaito_core.engine.Manager` for the length of a test.

``async with running_manager(manager): ...`` starts ``manager.run()`` as a task, returns once the
manager is ready (its caches synced, its controllers started), and on the way out stops it and waits
for it to finish. A manager that fails while starting raises its own error here, not a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from kaito_core.engine import Manager
from kaito_core.testing.waiting import eventually

__all__ = ["running_manager"]


@contextlib.asynccontextmanager
async def running_manager(manager: Manager, *, timeout: float = 60.0,
                          stop_timeout: float = 30.0) -> AsyncIterator[Manager]:
    """Run ``manager`` until the block ends; the block starts once it is ready."""
    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: manager.ready or task.done(), timeout, message="manager ready")
        if task.done():
            task.result()  # it failed while starting: its own error, not "not ready"
        yield manager
    finally:
        manager.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, stop_timeout)
