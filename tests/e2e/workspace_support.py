"""Shared by the Workspace e2e tests (no tests here): a manager running the Workspace and Machine
controllers (the simulated provisioner), the kit's CRD install, waiting helpers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kaito_core.api.crd import all_crds
from kaito_core.controllers.machine import MachineControllerSettings, add_machine_controller
from kaito_core.controllers.workspace import MACHINE, WORKSPACE, WorkspaceSettings, add_workspace_controller
from kaito_core.engine import Client, Manager, ManagerSettings
from kaito_core.provisioning import SimulatedProvisioner, SimulatedSettings
from kaito_core.testing import Cluster, condition, condition_is_true, install_crds, running_manager
from kaito_core.testing.waiting import eventually

__all__ = [
    "EXAMPLES",
    "condition",
    "delete_all_workspaces",
    "eventually",
    "get_workspace_columns",
    "is_true",
    "kubectl",
    "machines_of",
    "new_manager",
    "running_controller",
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"




async def kubectl(cluster: Cluster, *args: str, input: str | None = None, check: bool = True) -> str:
    proc = await asyncio.to_thread(cluster.kubectl, *args, input=input, check=check)
    return proc.stdout


# Shared with every test: kaito_core.testing reads conditions from object dicts.
is_true = condition_is_true


async def machines_of(client: Client, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = {"kaito.sh/workspace": name, "kaito.sh/workspacenamespace": namespace}
    return (await client.list(MACHINE, label_selector=selector)).items


async def get_workspace_columns(cluster: Cluster, namespace: str, name: str, *, wide: bool = False) -> dict[str, str]:
    """``kubectl get workspace NAME`` as {COLUMN: value}."""
    args = ["get", "workspace", name, "-n", namespace] + (["-o", "wide"] if wide else [])
    header, row = (await kubectl(cluster, *args)).rstrip("\n").splitlines()[:2]
    # Columns are fixed-width: an empty cell (no such condition) is blank, so cut by the header's offsets.
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, bounds, strict=True)}


async def delete_all_workspaces(client: Client, namespace: str, timeout: float = 30) -> None:
    for ws in (await client.list(WORKSPACE, namespace)).items:
        await client.delete(WORKSPACE, ws["metadata"]["name"], namespace, missing_ok=True)

    async def gone() -> bool:
        return not (await client.list(WORKSPACE, namespace)).items

    await eventually(gone, timeout, message="workspaces deleted")


def manager_settings(namespace: str) -> ManagerSettings:
    return ManagerSettings(namespace=namespace, http_port=None, handle_signals=False,
                           graceful_shutdown_timeout=3, name="kaito-workspace-test")


async def new_manager(cluster: Cluster, namespace: str, settings: WorkspaceSettings | None = None) -> Manager:
    """A manager with the Machine controller (the simulated provisioner, Machines scoped to this test's
    namespace) and the Workspace controller."""
    manager = await Manager.from_kubeconfig(cluster.kubeconfig, manager_settings(namespace))
    # Its selector keeps this test's Machines only (an event filter on the shared Machine informer).
    add_machine_controller(manager, SimulatedProvisioner(SimulatedSettings(launch_delay=0.2)),
                           MachineControllerSettings(machine_selector=f"kaito.sh/workspacenamespace={namespace}",
                                                     poll_interval=0.5, gc_enabled=False))
    add_workspace_controller(manager, settings or WorkspaceSettings(requeue_seconds=5), provisioner="simulated")
    return manager


@contextlib.asynccontextmanager
async def running_controller(cluster: Cluster, namespace: str, *,
                             settings: WorkspaceSettings | None = None) -> AsyncIterator[tuple[Manager, Client]]:
    """A manager with the Workspace and Machine controllers running; yields (manager, client)."""
    manager = await new_manager(cluster, namespace, settings)
    client = manager.client
    await install_crds(client, all_crds())
    try:
        async with running_manager(manager):
            try:
                yield manager, client
            finally:
                # Tear the test's Workspaces down while the controller still runs (their finalizers).
                with contextlib.suppress(Exception):
                    await delete_all_workspaces(client, namespace)
    finally:
        await client.close()
