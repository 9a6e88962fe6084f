"""Deletion: cordon the Node, ``provisioner.delete`` until ``get`` says it is gone, delete the
Node object if the provider did not, then (after the status write) drop the finalizer."""

from __future__ import annotations

import contextlib

import structlog

from kaito_core.api.conditions import MachineReason
from kaito_core.api.constants import MACHINE_FINALIZER
from kaito_core.controllers.machine.work import READY, MachineWork, duration
from kaito_core.engine.errors import NotFoundError
from kaito_core.engine.objects import meta, spec_of
from kaito_core.engine.reconcile import Result
from kaito_core.engine.resources import NODE
from kaito_core.provisioning.nodes import MACHINE
from kaito_core.provisioning.protocol import ProvisionerError

__all__ = ["reconcile", "release"]

log = structlog.get_logger("kaito_core.controllers.machine")


async def reconcile(work: MachineWork) -> Result:
    """Tear the instance down; :attr:`MachineWork.released` once it is gone."""
    machine, deps = work.machine, work.deps
    ready = work.cond(READY)
    work.blocked = (MachineReason.DELETING, "deleting the node")
    provisioner = await deps.handle.ready()
    if ready is None or ready.reason != MachineReason.DELETING:
        await work.checkpoint()  # delete may take minutes: say so first
    nodes = work.nodes()
    if not deps.handle.keeps_nodes:
        for node in nodes:
            if not spec_of(node).get("unschedulable"):
                with contextlib.suppress(NotFoundError):
                    await deps.client.patch(NODE, meta(node).name, {"spec": {"unschedulable": True}})
    try:
        await provisioner.delete(machine)
        leftover = await provisioner.get(machine)
    except ProvisionerError as exc:
        delay = deps.backoff.when(machine.name, exc.retry_after)
        message = f"deleting the instance failed: {exc.message} (retrying in {duration(delay)})"
        work.blocked = (MachineReason.DELETING, message)
        work.event(exc.reason, message, warning=True)
        return Result(requeue_after=delay)
    if leftover is not None:
        work.blocked = (MachineReason.DELETING,
                        f"waiting for {deps.handle.name} to delete instance {leftover.provider_id or machine.name}")
        return Result(requeue_after=deps.settings.poll_interval)
    await work.delete_nodes(nodes)
    work.released = True
    return Result()


async def release(work: MachineWork) -> None:
    """Drop our finalizer: the Machine goes."""
    machine = work.machine
    finalizers = [f for f in machine.metadata.finalizers or [] if f != MACHINE_FINALIZER]
    await work.deps.client.patch(MACHINE, machine.name, {"metadata": {
        "finalizers": finalizers, "resourceVersion": work.obj["metadata"].get("resourceVersion")}})
    work.deps.backoff.forget(machine.name)
    log.info("machine finalized", machine=machine.name)
