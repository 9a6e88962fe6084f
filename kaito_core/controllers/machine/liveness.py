"""Attempts, as Karpenter's liveness: an instance that does not get far enough in time is replaced.

Each attempt is numbered (``kaito.sh/launch-attempt``) and timed from its start
(``kaito.sh/launch-attempt-started``, else the Machine's creation). The launch and registration
phases measure their timeouts from :attr:`MachineWork.started`; when one passes, or the provider
lost the instance, :func:`recycle` deletes the instance (until gone), says why on the condition
and on Ready, and the reconciler starts the next attempt after its status write
(:func:`start_next_attempt`).
"""

from __future__ import annotations

from typing import Final

import structlog

from kaito_core.api.conditions import CONDITION_FALSE
from kaito_core.api.machine import Machine
from kaito_core.controllers.machine.work import READY, MachineWork
from kaito_core.engine.reconcile import Result
from kaito_core.provisioning.nodes import MACHINE, parse_timestamp
from kaito_core.provisioning.protocol import ProvisionerError

__all__ = ["ANNOTATION_ATTEMPT", "ANNOTATION_ATTEMPT_STARTED", "attempt_of", "recycle", "start_next_attempt"]

log = structlog.get_logger("kaito_core.controllers.machine")

#: On a Machine: the number of the current attempt (1 when absent).
ANNOTATION_ATTEMPT: Final = "kaito.sh/launch-attempt"
#: On a Machine: Unix time the current attempt started (the creation time when absent).
ANNOTATION_ATTEMPT_STARTED: Final = "kaito.sh/launch-attempt-started"


def attempt_of(machine: Machine, now: float) -> tuple[int, float]:
    """(number, start) of the Machine's current attempt."""
    annotations = machine.metadata.annotations or {}
    try:
        attempt = int(annotations.get(ANNOTATION_ATTEMPT, "1"))
    except ValueError:
        attempt = 1
    started: float | None
    try:
        started = float(annotations[ANNOTATION_ATTEMPT_STARTED])
    except (KeyError, ValueError):
        started = parse_timestamp(machine.metadata.creation_timestamp)
    return attempt, started if started is not None else now


async def recycle(work: MachineWork, type_: str, reason: str, message: str) -> Result:
    """The attempt failed: delete its instance (until gone) and start a fresh attempt."""
    deps = work.deps
    provisioner = await deps.handle.ready()
    name, attempt = work.name, work.attempt
    if (remaining := deps.backoff.remaining(name)) > 0:
        return Result(requeue_after=remaining)
    try:
        await provisioner.delete(work.machine)
        leftover = await provisioner.get(work.machine)
    except ProvisionerError as exc:
        delay = deps.backoff.when(name, exc.retry_after)
        work.set(type_, CONDITION_FALSE, reason,
                 f"attempt {attempt}: {message}; deleting the instance failed: {exc.message}")
        return Result(requeue_after=delay)
    if leftover is not None:
        work.set(type_, CONDITION_FALSE, reason, f"attempt {attempt}: {message}; deleting the instance before "
                                                 "trying again")
        return Result(requeue_after=deps.settings.poll_interval)
    await work.delete_nodes(work.nodes())
    text = f"attempt {attempt}: {message}; trying again with a fresh node (attempt {attempt + 1})"
    work.status.provider_id = work.status.node_name = None
    work.status.capacity = work.status.allocatable = None
    work.status.conditions = [c for c in work.status.conditions or [] if c.type in (type_, READY)]
    work.set(type_, CONDITION_FALSE, reason, text)
    work.event(reason, text, warning=True)
    log.warning("machine attempt failed; starting a fresh one", machine=name, reason=reason, attempt=attempt)
    work.node = None
    work.next_attempt = True
    return Result(requeue_after=0.1)


async def start_next_attempt(work: MachineWork) -> None:
    """After the status of a recycled attempt is written: number and time the next one."""
    deps = work.deps
    work.obj = await deps.client.patch(MACHINE, work.name, {"metadata": {
        "resourceVersion": work.obj["metadata"].get("resourceVersion"),
        "annotations": {ANNOTATION_ATTEMPT: str(work.attempt + 1),
                        ANNOTATION_ATTEMPT_STARTED: f"{deps.clock():.3f}"},
    }})
    deps.backoff.forget(work.name)
