"""Garbage collection of leaked nodes: provider nodes this install made whose Machine is gone.

A node leaks when its Machine vanished without the finalizer running (a forced delete, a
crash). This is the one collector (plugins keep none of their own). Each pass asks the
provisioner for every node it made (``list()``); a node is deleted only when

* it carries this install's identity (``kaito.sh/install``, see
  :mod:`kaito_core.provisioning.identity`): labels such as ``kaito.sh/machine`` are not proof
  of ownership, anyone can set them, and another install in the same cluster sets them too;
* it names a Machine (``NodeRef.machine_name`` or the ``kaito.sh/machine`` label);
* it is older than the grace period (a Machine created a moment ago may not be
  visible everywhere yet; a node of unknown age is left alone unless the grace is 0);
* the API server (not the cache) says that Machine does not exist.

Deletion goes through ``provisioner.delete`` with a Machine synthesized from the
NodeRef (name, labels, instance type), then the Node object goes too (unless the
provisioner keeps nodes, like ``byo``, whose ``delete`` just releases them), but only the
Node the provider listed: the same ``spec.providerID``, and the same install identity.
A Node without a providerID, or one the provider did not list, is never deleted here.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Callable

import structlog

from kaito_core.api.common import ObjectMeta
from kaito_core.api.constants import LABEL_MACHINE
from kaito_core.api.machine import Machine, MachineSpec
from kaito_core.controllers.machine.settings import MachineControllerSettings
from kaito_core.engine.client import Client
from kaito_core.engine.objects import meta, spec_of
from kaito_core.engine.resources import NODE
from kaito_core.provisioning.handle import ProvisionerHandle
from kaito_core.provisioning.identity import InstallIdentity
from kaito_core.provisioning.nodes import MACHINE
from kaito_core.provisioning.protocol import NodeRef

__all__ = ["MachineGarbageCollector", "machine_for_ref"]

log = structlog.get_logger("kaito_core.controllers.machine.gc")


def machine_for_ref(ref: NodeRef, machine_name: str) -> Machine:
    """A stand-in Machine for a leaked node, enough for ``provisioner.delete`` to find it by name."""
    return Machine(metadata=ObjectMeta(name=machine_name, labels=dict(ref.labels) or None),
                   spec=MachineSpec(instance_type=ref.instance_type or ""))


class MachineGarbageCollector:
    """Runs :meth:`collect` every ``gc_interval`` seconds (a manager runnable, leader only)."""

    def __init__(self, client: Client, provisioner: ProvisionerHandle, install: InstallIdentity,
                 settings: MachineControllerSettings | None = None, *, clock: Callable[[], float] = time.time):
        self.client = client
        self.handle = provisioner
        self.install = install
        self.settings = settings or MachineControllerSettings()
        self.clock = clock
        #: provider ids collected so far (tests and logs read it)
        self.collected: builtins.list[str] = []

    async def run(self) -> None:
        """Collect now and then every interval, until cancelled; a failing pass is logged and retried."""
        while True:
            try:
                await self.collect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("garbage collection pass failed; retrying next interval", error=str(exc))
            await asyncio.sleep(self.settings.gc_interval)

    async def collect(self) -> builtins.list[str]:
        """One pass; returns the provider ids of the nodes deleted."""
        provisioner = await self.handle.ready()
        now = self.clock()
        grace = self.settings.gc_grace_period
        deleted: builtins.list[str] = []
        for ref in await provisioner.list():
            machine_name = ref.machine_name or ref.labels.get(LABEL_MACHINE)
            if not machine_name or not self.install.owns(ref.labels):
                continue
            if ref.created_at is None and grace > 0:
                continue
            if ref.created_at is not None and now - ref.created_at < grace:
                continue
            if await self.client.get_or_none(MACHINE, machine_name) is not None:
                continue
            log.info("collecting a leaked node", provisioner=self.handle.name, provider_id=ref.provider_id,
                     node=ref.node_name, machine=machine_name)
            await provisioner.delete(machine_for_ref(ref, machine_name))
            if not self.handle.keeps_nodes and ref.provider_id:
                nodes = await self.client.list(NODE, label_selector=f"{LABEL_MACHINE}={machine_name}")
                for node in nodes.items:
                    if spec_of(node).get("providerID") == ref.provider_id and self.install.owns(meta(node).labels):
                        await self.client.delete(NODE, meta(node).name, missing_ok=True)
            deleted.append(ref.provider_id or ref.node_name or machine_name)
        self.collected.extend(deleted)
        return deleted
