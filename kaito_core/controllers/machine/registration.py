"""Registered: the Node with the instance's providerID joined (``status.nodeName``).

The Node is found through a cache index (or, for providers that hand out Nodes without a
providerID, by the ``kaito.sh/machine`` label). While it has not joined, the provider is asked
whether the instance still exists (gone: the attempt is recycled); no Node within
``registration_timeout`` of the attempt's start: the attempt is recycled too (:mod:`.liveness`).
"""

from __future__ import annotations

import structlog

from kaito_core.api.conditions import CONDITION_FALSE, CONDITION_TRUE, CONDITION_UNKNOWN, MachineReason
from kaito_core.controllers.machine.liveness import recycle
from kaito_core.controllers.machine.work import LAUNCHED, REGISTERED, MachineWork, at, duration
from kaito_core.engine.objects import meta
from kaito_core.engine.reconcile import Result
from kaito_core.provisioning.protocol import NodeRef

__all__ = ["reconcile"]

log = structlog.get_logger("kaito_core.controllers.machine")


async def reconcile(work: MachineWork) -> Result:
    """Find the instance's Node (:attr:`MachineWork.node`), or wait for it within the timeout."""
    provider_id = work.status.provider_id
    if not provider_id:
        return Result()
    node = work.find_node()
    if node is not None:
        work.node = node
        node_name = meta(node).name
        if work.status.node_name != node_name or not work.is_true(REGISTERED):
            work.status.node_name = node_name
            message = f"Node {node_name} joined the cluster"
            work.set(REGISTERED, CONDITION_TRUE, MachineReason.REGISTERED, message)
            work.event(MachineReason.REGISTERED, message)
        return Result()
    deps = work.deps
    if work.status.node_name:
        message = f"Node {work.status.node_name} of this Machine is gone"
        work.status.node_name = None
        work.status.capacity = work.status.allocatable = None
        work.set(REGISTERED, CONDITION_FALSE, MachineReason.NODE_NOT_FOUND, message)
        work.event(MachineReason.NODE_NOT_FOUND, message, warning=True)
    deadline = work.started + deps.settings.registration_timeout
    if work.now >= deadline:
        return await recycle(
            work, REGISTERED, MachineReason.REGISTRATION_TIMEOUT,
            f"instance {provider_id} launched but no Node with that providerID joined within "
            f"{duration(deps.settings.registration_timeout)}")
    provisioner = await deps.handle.ready()
    ref: NodeRef | None
    try:
        ref = await provisioner.get(work.machine)
    except Exception as exc:  # a failing lookup is not a lost instance; wait and look again
        log.info("provisioner lookup failed while waiting for registration", machine=work.name, error=str(exc))
        ref = NodeRef(provider_id=provider_id, message=f"the provider could not be asked: {exc}")
    if ref is None:
        return await recycle(work, LAUNCHED, MachineReason.INSTANCE_NOT_FOUND,
                             f"provisioner {deps.handle.name} no longer has instance {provider_id}")
    if not work.keep_timeout(REGISTERED):
        message = (f"waiting for a Node with providerID {provider_id} to join; registration timeout at "
                   f"{at(deadline)}" + (f"; {ref.message}" if ref.message else ""))
        work.set(REGISTERED, CONDITION_UNKNOWN, MachineReason.NODE_NOT_FOUND, message)
    return Result(requeue_after=min(deps.settings.poll_interval, max(deadline - work.now, 0.1)))
