"""Shared by the Machine controller tests (no tests here).

Each test labels its Machines ``kaito.sh/test-run=<id>`` and runs its controller with
``machine_selector`` on that label, so tests sharing the session's cluster never
reconcile each other's Machines.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from kaito_core.api.crd import machine_crd
from kaito_core.controllers.machine import MachineController, MachineControllerSettings, add_machine_controller
from kaito_core.engine import NODE, Client, Manager, ManagerSettings
from kaito_core.provisioning import MACHINE, NodeRef, Provisioner
from kaito_core.provisioning.identity import InstallIdentity
from kaito_core.testing import install_crds, running_manager
from kaito_core.testing.waiting import eventually

__all__ = [
    "INSTALL",
    "TEST_LABEL",
    "Recorder",
    "cleanup_machines",
    "condition",
    "eventually",
    "install_machine_crd",
    "machine_manifest",
    "nodes_of",
    "run_id",
    "running_controller",
]

TEST_LABEL = "kaito.sh/test-run"
#: The install identity these tests' controllers run as (their Machines carry it, as the
#: Workspace controller stamps it).
INSTALL = InstallIdentity(cluster_id="machine-tests", namespace="kaito-system")


def run_id() -> str:
    return uuid.uuid4().hex[:8]




async def install_machine_crd(client: Client) -> None:
    await install_crds(client, [machine_crd()], timeout=30)


def machine_manifest(name: str, run: str, *, instance_type: str = "Standard_NC6s_v3", gpus: int | None = None,
                     node_labels: dict[str, str] | None = None, startup_taints: list[dict[str, str]] | None = None,
                     workspace: tuple[str, str] = ("default", "ws"),
                     install: InstallIdentity | None = INSTALL, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "instanceType": instance_type,
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        **spec,
    }
    if gpus is not None:
        body["resources"] = {"requests": {"nvidia.com/gpu": gpus}}
    if node_labels:
        body["nodeLabels"] = node_labels
    if startup_taints:
        body["startupTaints"] = startup_taints
    return {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Machine",
        "metadata": {"name": name, "labels": {TEST_LABEL: run, "kaito.sh/workspace": workspace[1],
                                              "kaito.sh/workspacenamespace": workspace[0],
                                              **(install.labels() if install else {})}},
        "spec": body,
    }


def condition(machine: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((machine or {}).get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return {}


async def nodes_of(client: Client, machine: str) -> list[dict[str, Any]]:
    return (await client.list(NODE, label_selector=f"kaito.sh/machine={machine}")).items


@contextlib.asynccontextmanager
async def running_controller(kubeconfig: Path, provisioner: Provisioner, run: str,
                             **settings: Any) -> AsyncIterator[tuple[Manager, MachineController]]:
    """A manager running only the Machine controller (scoped to this run's Machines)."""
    manager = await Manager.from_kubeconfig(kubeconfig, ManagerSettings(
        http_port=None, handle_signals=False, graceful_shutdown_timeout=2))
    options: dict[str, Any] = {"machine_selector": f"{TEST_LABEL}={run}", "poll_interval": 0.5,
                               "gc_enabled": False, **settings}
    parts = add_machine_controller(manager, provisioner, MachineControllerSettings(**options), install=INSTALL)
    await install_machine_crd(manager.client)
    try:
        async with running_manager(manager):
            yield manager, parts
    finally:
        await manager.client.close()


async def cleanup_machines(client: Client, run: str, timeout: float = 60) -> None:
    """Delete this run's Machines and wait until they are gone (call while the controller runs)."""
    machines = (await client.list(MACHINE, label_selector=f"{TEST_LABEL}={run}")).items
    for machine in machines:
        await client.delete(MACHINE, machine["metadata"]["name"], missing_ok=True)

    async def gone() -> bool:
        return not (await client.list(MACHINE, label_selector=f"{TEST_LABEL}={run}")).items

    await eventually(gone, timeout, message="machines deleted")


class Recorder:
    """Wraps a provisioner: records when ``create`` was called, and can hook after it."""

    def __init__(self, inner: Any, *, after_create: Callable[[NodeRef], Awaitable[None]] | None = None,
                 fail_first: int = 0, failure: Callable[[], Exception] | None = None):
        self.inner = inner
        self.name = inner.name
        self.settings_model = inner.settings_model
        self.after_create = after_create
        self.fail_first = fail_first
        self.failure = failure
        self.create_times: list[float] = []

    async def start(self, ctx: Any) -> None:
        await self.inner.start(ctx)

    async def create(self, machine: Any) -> NodeRef:
        self.create_times.append(time.monotonic())
        if len(self.create_times) <= self.fail_first and self.failure is not None:
            raise self.failure()
        ref: NodeRef = await self.inner.create(machine)
        if self.after_create is not None:
            await self.after_create(ref)
        return ref

    async def get(self, machine: Any) -> NodeRef | None:
        result: NodeRef | None = await self.inner.get(machine)
        return result

    async def delete(self, machine: Any) -> None:
        await self.inner.delete(machine)

    async def list(self) -> list[NodeRef]:
        result: list[NodeRef] = await self.inner.list()
        return result

    async def close(self) -> None:
        await self.inner.close()
