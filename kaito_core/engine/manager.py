"""Manager: runs the shared cache, controllers, event recorder, probes and leader election.

Start order matters: the cache starts (on every replica, so standbys are warm),
``/readyz`` turns ready once every informer has synced, and only then (and only
on the leader) do controllers' workers start, so no reconcile ever reads a
half-filled cache. On leader loss the controllers stop at once and ``run()``
raises :class:`LeaderElectionLostError` (the process exits non-zero and
restarts as a standby, as controller-runtime does). SIGTERM stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from kaito_core.engine.cache import SharedCache
from kaito_core.engine.client import Client
from kaito_core.engine.controller import Controller
from kaito_core.engine.events import EventRecorder
from kaito_core.engine.health import Check, HealthServer
from kaito_core.engine.leader import LeaderElectionLostError, LeaderElector
from kaito_core.engine.metrics import EngineMetrics
from kaito_core.engine.settings import ManagerSettings
from kaito_core.engine.transport import ApiClientTransport

__all__ = ["CacheSyncTimeoutError", "Manager", "Runnable"]

log = structlog.get_logger("kaito_core.engine.manager")

Runnable = Callable[[], Awaitable[None]]


class CacheSyncTimeoutError(TimeoutError):
    """The informers did not finish their first LIST within ``cache_sync_timeout``."""


class Manager:
    """Owns everything controllers share. ``add`` controllers, then ``await run()``."""

    def __init__(self, client: Client, settings: ManagerSettings | None = None, *,
                 registry: CollectorRegistry | None = None):
        self.settings = settings or ManagerSettings()
        self.client = client
        self.cache = SharedCache(client, namespace=self.settings.namespace,
                                 resync_period=self.settings.resync_period)
        self.metrics = EngineMetrics(registry)
        self.recorder = EventRecorder(client, self.settings.name)
        if client.on_written is None:
            client.on_written = self.cache.observe_write  # reconcilers read their own writes
        self.controllers: list[Controller] = []
        self._runnables: list[tuple[Runnable, bool]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._ready = False
        self.fenced_writes = 0
        """Writes the leader-election fence refused (see :meth:`LeaderElector.lease_may_be_lost`)."""
        le = self.settings.leader_election
        self.elector: LeaderElector | None = None
        if le.enabled:
            self.elector = LeaderElector(client, le, on_change=lambda leader: self.metrics.leader_status.labels(
                le.lease_name).set(1 if leader else 0))
            client.write_fence = self._fence
        self.http: HealthServer | None = None
        if self.settings.http_port is not None:
            self.http = HealthServer(self.metrics.registry, self.settings.bind_address, self.settings.http_port)
            self.http.ready_checks["cache-sync"] = lambda: self._ready

    @classmethod
    async def from_kubeconfig(cls, kubeconfig: str | Path | None = None,
                              settings: ManagerSettings | None = None, **kwargs: Any) -> Manager:
        """A manager with its own client from a kubeconfig (in-cluster config when None and none found)."""
        settings = settings or ManagerSettings()
        transport = await ApiClientTransport.from_kubeconfig(kubeconfig)
        client = Client(transport, field_manager=settings.field_manager, timeout=settings.request_timeout)
        return cls(client, settings, **kwargs)

    def _fence(self, method: str, path: str) -> None:
        """The client's write fence: refuse a write once the lease may have passed to another replica."""
        if self.elector is not None and self.elector.lease_may_be_lost():
            self.fenced_writes += 1
            raise LeaderElectionLostError(f"not sending {method} {path}: the lease was not renewed within the "
                                          "renew deadline, another replica may lead now")

    # -- registration

    def add(self, controller: Controller) -> Controller:
        """Register a controller (its informers are created now, started with the cache)."""
        if any(c.name == controller.name for c in self.controllers):
            raise ValueError(f"a controller named {controller.name!r} is already registered")
        controller.setup(self.cache, self.metrics, self.recorder)
        self.controllers.append(controller)
        return controller

    def add_runnable(self, runnable: Runnable, *, needs_leader: bool = False) -> None:
        """Run a coroutine function alongside (e.g. a webhook server); cancelled at shutdown."""
        self._runnables.append((runnable, needs_leader))

    def add_health_check(self, name: str, check: Check) -> None:
        if self.http:
            self.http.health_checks[name] = check

    def add_ready_check(self, name: str, check: Check) -> None:
        if self.http:
            self.http.ready_checks[name] = check

    # -- state

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader if self.elector else True

    @property
    def http_port(self) -> int | None:
        return self.http.bound_port if self.http else None

    def stop(self) -> None:
        """Ask ``run()`` to shut down cleanly (what SIGTERM does)."""
        self._stop.set()

    # -- running

    def _spawn(self, runnable: Runnable) -> None:
        async def wrapped() -> None:
            try:
                await runnable()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("runnable failed; stopping the manager",
                              runnable=getattr(runnable, "__name__", "?"))
                self._stop.set()

        self._tasks.append(asyncio.create_task(wrapped(), name=f"runnable:{getattr(runnable, '__name__', '?')}"))

    async def _until_stopped(self, awaitable: Awaitable[Any]) -> bool:
        """Await ``awaitable`` unless stop comes first; True if it completed."""
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    def _install_signals(self) -> list[signal.Signals]:
        if not self.settings.handle_signals:
            return []
        installed = []
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                pass
        return installed

    async def run(self) -> None:
        """Run until ``stop()``/SIGTERM; raises LeaderElectionLostError or CacheSyncTimeoutError."""
        loop = asyncio.get_running_loop()
        signals = self._install_signals()
        lost = False
        controllers_started = False
        try:
            if self.http:
                port = await self.http.start()
                log.info("serving probes and metrics", port=port)
            await self.cache.start()
            self.recorder.start()
            for runnable, needs_leader in self._runnables:
                if not needs_leader:
                    self._spawn(runnable)
            synced = await self._until_stopped(self.cache.wait_for_sync(self.settings.cache_sync_timeout))
            if not synced:
                return
            if not self.cache.has_synced:
                raise CacheSyncTimeoutError(f"caches did not sync within {self.settings.cache_sync_timeout}s")
            self._ready = True
            log.info("caches synced", informers=len(self.cache.informers))
            if self.elector is not None and not await self._until_stopped(self.elector.acquire()):
                return
            for controller in self.controllers:
                await controller.start()
            controllers_started = True
            for runnable, needs_leader in self._runnables:
                if needs_leader:
                    self._spawn(runnable)
            if self.elector is not None:
                # Returns only if leadership is lost; a stop request wins otherwise.
                lost = await self._until_stopped(self.elector.hold())
            else:
                await self._stop.wait()
        finally:
            self._ready = False
            # Having lost the lease, another replica may already be reconciling: stop
            # at once rather than drain, so no object is worked on by two leaders.
            drain = 0.0 if lost else self.settings.graceful_shutdown_timeout
            if controllers_started:
                await asyncio.gather(*(c.stop(drain) for c in self.controllers))
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks.clear()
            if self.elector is not None and not lost and self.settings.leader_election.release_on_cancel:
                await self.elector.release()
            await self.recorder.stop()
            await self.cache.stop()
            if self.http:
                await self.http.stop()
            for sig in signals:
                loop.remove_signal_handler(sig)
            log.info("manager stopped", leader_lost=lost)
        if lost:
            raise LeaderElectionLostError("leader election lost")
