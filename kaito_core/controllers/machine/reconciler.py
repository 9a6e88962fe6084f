"""The Machine reconciler: turns a Machine into a Ready GPU Node through a provisioner plugin.

The lifecycle follows Karpenter's NodeClaim (``nodeclaim/lifecycle``), one module per phase,
each a sub-reconciler ``async def reconcile(work) -> Result``:

1. **finalizer** ``machine.finalizer.kaito.sh`` first, so the instance is torn down before the object goes;
2. :mod:`.launch` (**Launched**): ``provisioner.create(machine)`` until it returns a providerID;
3. :mod:`.registration` (**Registered**): the Node with that providerID joined: ``status.nodeName``;
4. :mod:`.initialization` (**Initialized**): labels and taints synced, the Node Ready with its GPUs
   and clear of Kubernetes' "not yet" taints; the startup taints removed;
5. :mod:`.liveness`: an attempt that does not launch or register in time, or whose instance the
   provider lost, is deleted and a fresh one starts;
6. :mod:`.termination` on delete: cordon, ``provisioner.delete`` until gone, drop the finalizer.

The phases run in order and share a :class:`~.work.MachineWork`; the status is written once at the
end, Ready computed from the three conditions (:func:`~kaito_core.api.conditions.machine_ready`),
and the next wait is the shortest any phase asked for (:func:`~kaito_core.engine.soonest`).
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from pydantic import ValidationError

from kaito_core.api.conditions import CONDITION_UNKNOWN, MachineReason
from kaito_core.api.constants import MACHINE_FINALIZER
from kaito_core.api.machine import Machine, MachineStatus
from kaito_core.controllers.machine import initialization, launch, liveness, registration, termination
from kaito_core.controllers.machine.settings import MachineControllerSettings
from kaito_core.controllers.machine.watches import machines_for_node
from kaito_core.controllers.machine.work import LAUNCHED, Deps, MachineWork
from kaito_core.engine.cache import SharedCache
from kaito_core.engine.client import Client
from kaito_core.engine.errors import ConflictError, NotFoundError
from kaito_core.engine.events import EventRecorder
from kaito_core.engine.labels import parse_selector
from kaito_core.engine.objects import meta
from kaito_core.engine.ratelimit import ItemBackoff
from kaito_core.engine.reconcile import Request, Result, TerminalError, soonest
from kaito_core.provisioning.handle import ProvisionerHandle
from kaito_core.provisioning.nodes import MACHINE

__all__ = ["MachineReconciler"]

log = structlog.get_logger("kaito_core.controllers.machine")

Phase = Callable[[MachineWork], Awaitable[Result]]
#: The phases of a live Machine, in order (each does nothing until the one before is done).
LIFECYCLE: tuple[Phase, ...] = (launch.reconcile, registration.reconcile, initialization.reconcile)


class MachineReconciler:
    """Reconciles one Machine at a time (the controller never runs two on the same key)."""

    def __init__(self, client: Client, cache: SharedCache, provisioner: ProvisionerHandle,
                 settings: MachineControllerSettings | None = None, *, recorder: EventRecorder | None = None,
                 clock: Callable[[], float] = time.time):
        self.client = client
        self.cache = cache
        self.handle = provisioner
        self.settings = settings or MachineControllerSettings()
        self.recorder = recorder
        self.clock = clock
        #: Waits between provider calls after failures, per Machine name.
        self.backoff = ItemBackoff(self.settings.retry_backoff_max, clock=clock)
        self._selector = parse_selector(self.settings.machine_selector) if self.settings.machine_selector else None

    def machines_for_node(self, node: Mapping[str, Any]) -> builtins.list[Request]:
        """The Machines a Node event concerns: by providerID, and by its ``kaito.sh/machine`` label."""
        return machines_for_node(self.cache, node)

    def _deps(self) -> Deps:
        return Deps(self.client, self.cache, self.handle, self.settings, self.backoff, self.recorder, self.clock)

    async def reconcile(self, request: Request) -> Result:
        obj = self.cache.get(MACHINE, None, request.name)
        if obj is None:
            self.backoff.forget(request.name)
            return Result()
        if self._selector is not None and not self._selector.matches(meta(obj).labels):
            return Result()  # another controller's Machine (machine_selector)
        try:
            machine = Machine.from_dict(obj)
        except ValidationError as exc:
            raise TerminalError(f"Machine {request.name} cannot be read: {exc}", reason="InvalidMachine") from exc
        work = MachineWork(self._deps(), obj, machine, (machine.status or MachineStatus()).model_copy(deep=True))
        wanted = machine.spec.provisioner
        if wanted and wanted != self.handle.name:
            return await self._not_ours(work, wanted)
        try:
            if machine.metadata.deletion_timestamp:
                if MACHINE_FINALIZER not in (machine.metadata.finalizers or []):
                    return Result()  # torn down already
                result = await self._run(work, termination.reconcile)
                if work.released:
                    await termination.release(work)
                return result
            if MACHINE_FINALIZER not in (machine.metadata.finalizers or []):
                work.obj = await self.client.patch(MACHINE, machine.name, {"metadata": {
                    "finalizers": [*(machine.metadata.finalizers or []), MACHINE_FINALIZER],
                    "resourceVersion": machine.metadata.resource_version}})
            work.now = self.clock()
            work.attempt, work.started = liveness.attempt_of(machine, work.now)
            result = await self._run(work, *LIFECYCLE)
            if work.next_attempt:
                await liveness.start_next_attempt(work)
            return result
        except ConflictError:
            # The cache was behind our own last write: the watch event brings the new version.
            log.debug("machine changed while reconciling; retrying", machine=request.name)
            return Result(requeue=True)
        except NotFoundError:
            if await self.client.get_or_none(MACHINE, request.name) is None:
                return Result()
            raise

    async def _run(self, work: MachineWork, *phases: Phase) -> Result:
        """Every phase in order, then the one status write; a phase that fails still gets its
        conditions written (best effort) before the error goes to the controller's backoff."""
        results: builtins.list[Result] = []
        try:
            for phase in phases:
                results.append(await phase(work))
        except (ConflictError, NotFoundError):
            raise
        except Exception:
            with contextlib.suppress(Exception):
                await work.persist()
            raise
        await work.persist()
        return soonest(*results)

    async def _not_ours(self, work: MachineWork, wanted: str) -> Result:
        """A Machine for another provisioner: say so once, touch nothing else (its controller owns it)."""
        if work.cond(LAUNCHED) is None and not work.machine.metadata.deletion_timestamp:
            work.set(LAUNCHED, CONDITION_UNKNOWN, MachineReason.OTHER_PROVISIONER,
                     f"this Machine asks for provisioner {wanted!r} but this controller runs "
                     f"{self.handle.name!r}; run a controller with --provisioner {wanted}, or recreate the "
                     f"Machine without spec.provisioner")
            with contextlib.suppress(ConflictError, NotFoundError):
                await work.write_status()
        return Result()
