"""The Machine controller: Machines become Ready GPU Nodes through a provisioner plugin.

::

    from kaito_core.controllers.machine import MachineControllerSettings, add_machine_controller
    from kaito_core.provisioning import load_provisioner

    manager = await Manager.from_kubeconfig(...)
    provisioner = load_provisioner("simulated", {"launch_delay": 1})
    add_machine_controller(manager, provisioner, MachineControllerSettings(launch_timeout=300))
    await manager.run()

``add_machine_controller`` registers the controller (For Machine; watches Nodes, mapped
to their Machine by providerID and by the ``kaito.sh/machine`` label, through cache
indexes), the leak collector (a leader-only runnable) and a runnable that closes the
provisioner at shutdown. The provisioner is started (``start(ctx)``) on first use
unless the caller started it already (``started=True``: do that to fail fast at
start-up on missing prerequisites).
"""

from __future__ import annotations

import asyncio

from kaito_core.controllers.cached_fields import keep_read_fields
from kaito_core.controllers.machine.gc import MachineGarbageCollector, machine_for_ref
from kaito_core.controllers.machine.liveness import ANNOTATION_ATTEMPT, ANNOTATION_ATTEMPT_STARTED
from kaito_core.controllers.machine.reconciler import MachineReconciler
from kaito_core.controllers.machine.settings import MachineControllerSettings
from kaito_core.controllers.machine.watches import (
    INDEX_MACHINE_PROVIDER_ID,
    INDEX_NODE_MACHINE,
    INDEX_NODE_PROVIDER_ID,
    machine_provider_id_index,
    node_machine_index,
    node_provider_id_index,
    not_status_only,
    selected,
)
from kaito_core.engine.controller import Controller
from kaito_core.engine.logging import get_logger
from kaito_core.engine.manager import Manager
from kaito_core.engine.predicate import not_just_a_heartbeat
from kaito_core.engine.resources import NODE
from kaito_core.provisioning.handle import ProvisionerHandle
from kaito_core.provisioning.identity import InstallIdentity
from kaito_core.provisioning.nodes import MACHINE
from kaito_core.provisioning.protocol import Provisioner, ProvisionerContext

__all__ = [
    "ANNOTATION_ATTEMPT",
    "ANNOTATION_ATTEMPT_STARTED",
    "CONTROLLER_NAME",
    "MachineController",
    "MachineControllerSettings",
    "MachineGarbageCollector",
    "MachineReconciler",
    "ProvisionerHandle",
    "add_machine_controller",
    "machine_for_ref",
]

CONTROLLER_NAME = "machine"


class MachineController:
    """What :func:`add_machine_controller` registered (tests and embedders reach the parts here)."""

    def __init__(self, controller: Controller, reconciler: MachineReconciler,
                 collector: MachineGarbageCollector | None, handle: ProvisionerHandle):
        self.controller = controller
        self.reconciler = reconciler
        self.collector = collector
        self.handle = handle


def add_machine_controller(manager: Manager, provisioner: Provisioner,
                           settings: MachineControllerSettings | None = None, *,
                           namespace: str = "kaito-system", started: bool = False,
                           context: ProvisionerContext | None = None,
                           install: InstallIdentity | None = None) -> MachineController:
    """Register the Machine controller, its garbage collector and the provisioner's shutdown on ``manager``.

    Call before ``manager.run()``. ``namespace`` is the controller's own namespace, handed to the
    plugin in its :class:`ProvisionerContext` (or pass ``context``); ``started=True`` when the
    caller already awaited ``provisioner.start(ctx)``. ``install`` is the identity the Workspace
    controller stamps on its Machines: without one the leak collector does not run (nothing
    would be provably ours).
    """
    settings = settings or MachineControllerSettings()
    name = str(getattr(provisioner, "name", type(provisioner).__name__))
    ctx = context or ProvisionerContext(client=manager.client, logger=get_logger(f"kaito.provisioner.{name}"),
                                        namespace=namespace, install=install,
                                        write_fence=manager.client.write_fence)
    handle = ProvisionerHandle(provisioner, ctx, started=started)
    keep_read_fields(manager.cache)
    reconciler = MachineReconciler(manager.client, manager.cache, handle, settings, recorder=manager.recorder)
    # One informer for Machines, shared with the Workspace controller; the selector filters events
    # (a second, selected informer would race the shared one the reconciler reads from).
    predicates = [not_status_only]
    if settings.machine_selector:
        predicates.append(selected(settings.machine_selector))
    controller = (Controller.for_(MACHINE, *predicates)
                  .watches(NODE, reconciler.machines_for_node, not_just_a_heartbeat)
                  .with_workers(settings.workers)
                  .named(CONTROLLER_NAME)
                  .build(reconciler))
    manager.add(controller)
    manager.cache.add_index(NODE, INDEX_NODE_PROVIDER_ID, node_provider_id_index)
    manager.cache.add_index(NODE, INDEX_NODE_MACHINE, node_machine_index)
    manager.cache.add_index(MACHINE, INDEX_MACHINE_PROVIDER_ID, machine_provider_id_index)
    collector: MachineGarbageCollector | None = None
    if settings.gc_enabled and install is not None:
        collector = MachineGarbageCollector(manager.client, handle, install, settings)
        manager.add_runnable(collector.run, needs_leader=True)
    elif settings.gc_enabled:
        get_logger("kaito_core.controllers.machine").warning(
            "no install identity given: leaked nodes are not collected (pass install= to add_machine_controller)")

    async def close_provisioner() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            try:
                await handle.close()
            except Exception as exc:
                get_logger("kaito_core.controllers.machine").warning("closing the provisioner failed",
                                                                     error=str(exc))

    manager.add_runnable(close_provisioner)
    return MachineController(controller, reconciler, collector, handle)
