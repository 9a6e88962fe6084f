"""Lease-based leader election, after client-go's leaderelection package.

Times are read from the monotonic clock only: a standby decides the lease is
expired when it has not seen the lease *change* for ``lease_duration`` by its
own clock, so clock skew between replicas cannot cause two leaders. Every API
call has a timeout; the leader that cannot renew within ``renew_deadline``
steps down, which is before any standby may take over (``lease_duration``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import structlog

from kaito_core.engine.client import Client, RetryPolicy
from kaito_core.engine.clock import Clock, LoopClock
from kaito_core.engine.errors import APIError, ConflictError, NotFoundError
from kaito_core.engine.resources import LEASE
from kaito_core.engine.settings import LeaderElectionSettings

__all__ = ["LeaderElectionLostError", "LeaderElector"]

log = structlog.get_logger("kaito_core.engine.leader")


class LeaderElectionLostError(RuntimeError):
    """This replica stopped being the leader; the process should exit non-zero."""


def _micro_time() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """``await acquire()`` until leader, then ``await hold()`` returns when leadership is lost."""

    def __init__(self, client: Client, settings: LeaderElectionSettings, *, clock: Clock | None = None,
                 on_change: Callable[[bool], None] | None = None):
        # Our own client: no retry loops of its own; the election loop is the retry.
        self.client = Client(client.transport, field_manager=client.field_manager,
                             timeout=settings.retry_period, retry=RetryPolicy(attempts=1))
        self.settings = settings
        self.clock: Clock = clock or LoopClock()
        self.on_change = on_change
        self.identity = settings.identity
        self._observed_record: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._is_leader = False
        self._has_led = False
        self._log = log.bind(lease=f"{settings.lease_namespace}/{settings.lease_name}", identity=self.identity)

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    def lease_may_be_lost(self) -> bool:
        """True once this replica has led and has not renewed within ``renew_deadline``: from then on
        a standby may hold the lease, so nothing may be written (the Manager's write fence). The
        monotonic clock keeps running while the process is stopped, so a leader resumed after a
        SIGSTOP (or a long GC pause, a frozen VM) sees it before its first write."""
        return self._has_led and self.clock.now() - self._last_renew >= self.settings.renew_deadline

    def _set_leader(self, value: bool) -> None:
        if value:
            self._has_led = True
        if value != self._is_leader:
            self._is_leader = value
            self._log.info("leadership changed", leader=value)
            if self.on_change:
                self.on_change(value)

    def _spec(self, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.settings.lease_duration),
            "acquireTime": acquire_time,
            "renewTime": _micro_time(),
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self, timeout: float) -> bool:
        """One attempt; True if we hold the lease afterwards."""
        s = self.settings
        try:
            lease = await self.client.get(LEASE, s.lease_name, s.lease_namespace, timeout=timeout)
        except NotFoundError:
            stamp = _micro_time()
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": s.lease_name, "namespace": s.lease_namespace},
                    "spec": self._spec(stamp, 0)}
            sent = self.clock.now()
            try:
                await self.client.create(body, kind=LEASE, timeout=timeout)
            except ConflictError:
                return False
            self._observed_record = None
            self._observed_at = self._last_renew = sent
            return True
        spec = lease.get("spec") or {}
        now = self.clock.now()
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseDurationSeconds"),
                  spec.get("leaseTransitions"), spec.get("acquireTime"))
        if record != self._observed_record:
            self._observed_record = record
            self._observed_at = now
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or s.lease_duration)
        if holder and holder != self.identity and self._observed_at + duration > now:
            return False  # someone else holds a lease we saw alive less than a lease ago
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            new_spec = self._spec(spec.get("acquireTime") or _micro_time(), transitions)
        else:
            new_spec = self._spec(_micro_time(), transitions + 1)
        lease["spec"] = new_spec
        # The renewal counts from *before* it is sent, never from when its answer is read: a process
        # stopped (SIGSTOP, a frozen VM) with the answer unread would otherwise wake, read "renewed",
        # and believe it holds the lease for another renew_deadline that a standby has already used.
        # The standby's clock for this lease starts when it sees the change, which is later still.
        sent = self.clock.now()
        try:
            # The resourceVersion in the body makes this a compare-and-swap: of two
            # standbys racing for an expired lease, exactly one wins.
            await self.client.update(lease, kind=LEASE, timeout=timeout)
        except ConflictError:
            return False
        self._last_renew = self._observed_at = sent
        return True

    async def acquire(self) -> None:
        """Return once we are the leader (cancel to give up)."""
        self._log.info("waiting to become leader")
        while True:
            try:
                if await self.try_acquire_or_renew(timeout=self.settings.retry_period):
                    self._set_leader(True)
                    return
            except (APIError, OSError) as exc:
                self._log.debug("lease acquire attempt failed", error=repr(exc))
            await asyncio.sleep(self.settings.retry_period)

    async def hold(self) -> None:
        """Renew every ``retry_period``; return when a renewal has not succeeded within ``renew_deadline``."""
        s = self.settings
        while True:
            await asyncio.sleep(s.retry_period)
            remaining = s.renew_deadline - (self.clock.now() - self._last_renew)
            if remaining > 0:
                try:
                    ok = await self.try_acquire_or_renew(timeout=max(0.1, min(remaining, s.retry_period)))
                    if ok and not self.lease_may_be_lost():
                        continue  # (a renewal whose answer came back after the deadline is no renewal)
                    holder = self._observed_record[0] if self._observed_record else None
                    if holder and holder != self.identity:
                        self._log.warning("lease taken by another replica", holder=holder)
                        break
                    # A lost compare-and-swap with ourselves as holder: try again until the deadline.
                except (APIError, OSError) as exc:
                    self._log.warning("lease renewal failed", error=repr(exc))
            if self.clock.now() - self._last_renew >= s.renew_deadline:
                self._log.error("could not renew the lease within the renew deadline")
                break
        self._set_leader(False)

    async def release(self) -> None:
        """Hand the lease back (holder cleared, 1 s duration) if we hold it."""
        if not self._is_leader:
            return
        s = self.settings
        try:
            lease = await self.client.get(LEASE, s.lease_name, s.lease_namespace, timeout=s.retry_period)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") == self.identity:
                spec.update({"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _micro_time()})
                lease["spec"] = spec
                await self.client.update(lease, kind=LEASE, timeout=s.retry_period)
        except (APIError, OSError) as exc:
            self._log.warning("could not release the lease", error=repr(exc))
        self._set_leader(False)
