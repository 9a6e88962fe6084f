"""The manager's HTTP endpoint: /healthz (alive), /readyz (caches synced) and /metrics.

Other routes may be added on ``server.app`` before the manager starts; the
admission webhook has its own TLS server and runs as a manager runnable.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["Check", "HealthServer"]

Check = Callable[[], bool]


class HealthServer:
    def __init__(self, registry: CollectorRegistry, host: str = "0.0.0.0", port: int = 8080):
        self.registry = registry
        self.host = host
        self.port = port
        self.health_checks: dict[str, Check] = {"ping": lambda: True}
        self.ready_checks: dict[str, Check] = {}
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    @staticmethod
    def _answer(checks: dict[str, Check], request: web.Request) -> web.Response:
        lines, ok = [], True
        for name, check in checks.items():
            try:
                passed = bool(check())
            except Exception:
                passed = False
            ok &= passed
            lines.append(f"[{'+' if passed else '-'}]{name} {'ok' if passed else 'failed'}")
        verbose = "verbose" in request.query
        body = "\n".join(lines) + "\n" if verbose or not ok else "ok"
        return web.Response(status=200 if ok else 503, text=body)

    async def _healthz(self, request: web.Request) -> web.Response:
        return self._answer(self.health_checks, request)

    async def _readyz(self, request: web.Request) -> web.Response:
        return self._answer(self.ready_checks or {"none": lambda: False}, request)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        self.bound_port = int(addresses[0][1]) if addresses else self.port
        return self.bound_port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
