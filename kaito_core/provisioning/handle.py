"""The provisioner plus its one-time ``start(ctx)``, shared by the Machine reconciler and the collector."""

from __future__ import annotations

import asyncio

from kaito_core.provisioning.protocol import Provisioner, ProvisionerContext

__all__ = ["ProvisionerHandle"]


class ProvisionerHandle:
    """Starts the provisioner on first use (a failing start is retried on the next call) and closes it once."""

    def __init__(self, provisioner: Provisioner, context: ProvisionerContext, *, started: bool = False):
        self.provisioner = provisioner
        self.context = context
        self._started = started
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return str(getattr(self.provisioner, "name", type(self.provisioner).__name__))

    @property
    def keeps_nodes(self) -> bool:
        """The plugin hands out nodes it does not own (``byo``): never cordon or delete them."""
        return bool(getattr(self.provisioner, "keeps_nodes", False))

    async def ready(self) -> Provisioner:
        """The provisioner, started once (a failing start is retried on the next call)."""
        if not self._started:
            async with self._lock:
                if not self._started:
                    try:
                        await self.provisioner.start(self.context)
                    except Exception as exc:
                        raise RuntimeError(f"provisioner {self.name!r} failed to start: {exc}") from exc
                    self._started = True
        return self.provisioner

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.provisioner.close()
