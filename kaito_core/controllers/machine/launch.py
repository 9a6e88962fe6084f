"""Launched: ``provisioner.create(machine)`` until it returns a providerID.

``create`` is idempotent, so calling it again after a crash finds the same instance. Typed
provisioner errors become ``Launched=False`` with the error's reason and message, retried after
``retry_after`` with doubling backoff (the engine's :class:`~kaito_core.engine.ItemBackoff`, so an
unrelated event cannot cut the wait short). No instance within ``launch_timeout`` of the attempt's
start: the attempt is recycled (:mod:`.liveness`).
"""

from __future__ import annotations

import asyncio

import structlog

from kaito_core.api.conditions import CONDITION_FALSE, CONDITION_TRUE, CONDITION_UNKNOWN, MachineReason
from kaito_core.controllers.machine.liveness import recycle
from kaito_core.controllers.machine.work import LAUNCHED, MachineWork, at, duration
from kaito_core.engine.reconcile import Result
from kaito_core.provisioning.protocol import ProvisionerError

__all__ = ["reconcile"]

log = structlog.get_logger("kaito_core.controllers.machine")


async def reconcile(work: MachineWork) -> Result:
    """Launch the instance of the current attempt, unless it has a providerID already."""
    if work.status.provider_id:
        return Result()
    deps = work.deps
    try:
        provisioner = await deps.handle.ready()
    except Exception as exc:
        work.set(LAUNCHED, CONDITION_FALSE, MachineReason.LAUNCH_FAILED, str(exc))
        raise
    name, machine, settings = work.name, work.machine, deps.settings
    deadline = work.started + settings.launch_timeout
    what = f"{deps.handle.name} is launching a {machine.spec.instance_type or 'node'} (attempt {work.attempt})"
    if work.now >= deadline:
        return await recycle(work, LAUNCHED, MachineReason.LAUNCH_TIMEOUT,
                             f"no instance was launched within {duration(settings.launch_timeout)}")
    if (remaining := deps.backoff.remaining(name)) > 0:
        return Result(requeue_after=remaining)
    if work.cond(LAUNCHED) is None:
        work.set(LAUNCHED, CONDITION_UNKNOWN, MachineReason.LAUNCHING, f"{what}; launch timeout at {at(deadline)}")
        await work.checkpoint()  # create may take minutes: say so first
    try:
        async with asyncio.timeout(deadline - work.now) as budget:
            ref = await provisioner.create(machine)
    except TimeoutError:
        if not budget.expired():
            raise
        return await recycle(
            work, LAUNCHED, MachineReason.LAUNCH_TIMEOUT,
            f"the provisioner did not launch an instance within {duration(settings.launch_timeout)}")
    except ProvisionerError as exc:
        delay = deps.backoff.when(name, exc.retry_after)
        message = f"{exc.message} (retrying in {duration(delay)})"
        work.set(LAUNCHED, CONDITION_FALSE, exc.reason, message)
        work.event(exc.reason, message, warning=True)
        log.info("provisioner could not launch", machine=name, reason=exc.reason, error=exc.message, retry_in=delay)
        return Result(requeue_after=delay)
    except Exception as exc:
        message = f"provisioner {deps.handle.name} failed to launch the instance: {exc or type(exc).__name__}"
        work.set(LAUNCHED, CONDITION_FALSE, MachineReason.LAUNCH_FAILED, message)
        raise
    if not ref.provider_id:
        if not work.keep_timeout(LAUNCHED):
            work.set(LAUNCHED, CONDITION_UNKNOWN, MachineReason.LAUNCHING,
                     f"{ref.message or what}; launch timeout at {at(deadline)}")
        return Result(requeue_after=min(settings.poll_interval, max(deadline - work.now, 0.1)))
    deps.backoff.forget(name)
    work.status.provider_id = ref.provider_id
    message = f"{deps.handle.name} launched instance {ref.provider_id}"
    work.set(LAUNCHED, CONDITION_TRUE, MachineReason.LAUNCHED, message)
    work.event(MachineReason.LAUNCHED, message)
    await work.checkpoint()  # persist the providerID before anything else can fail
    return Result()
