"""Shared by the Workspace e2e tests (no tests here): CRDs, a manager running the Workspace
controller, Machines made Ready, waiting helpers.

Until the Machine controller lands, :class:`MachineSimulator` plays it: for each Machine it
creates a kwok GPU node (``gpu_node_manifest``) named after it, with the Machine's labels and
taints, then marks the Machine Ready with ``status.nodeName``; on Machine deletion it deletes
the node and removes the finalizers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kaito_core.api import GPU_RESOURCE, LABEL_MACHINE
from kaito_core.controllers.workspace import MACHINE, WORKSPACE, WorkspaceSettings, add_workspace_controller
from kaito_core.engine import CRD, NODE, Client, Manager, ManagerSettings, NotFoundError
from kaito_core.testing import Cluster, condition, condition_is_true, gpu_node_manifest
from kaito_core.testing.waiting import eventually

__all__ = [
    "EXAMPLES",
    "MachineSimulator",
    "condition",
    "eventually",
    "get_workspace_columns",
    "install_crds",
    "kubectl",
    "machines_of",
    "running_controller",
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CRDS = ROOT / "deploy" / "crds"




async def kubectl(cluster: Cluster, *args: str, input: str | None = None, check: bool = True) -> str:
    proc = await asyncio.to_thread(cluster.kubectl, *args, input=input, check=check)
    return proc.stdout


async def install_crds(cluster: Cluster, client: Client) -> None:
    await kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRDS))

    async def served() -> bool:
        for name in ("workspaces.kaito.sh", "machines.kaito.sh"):
            crd = await client.get(CRD, name)
            conds = (crd.get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                return False
        try:
            await client.list_page(WORKSPACE, "default", limit=1)
            await client.list_page(MACHINE, limit=1)
        except NotFoundError:
            return False
        return True

    await eventually(served, 60, message="CRDs established")


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


class MachineSimulator:
    """Makes Machines Ready with a kwok node each; tears them down on delete."""

    def __init__(self, client: Client, *, delay: float = 0.0):
        self.client = client
        self.delay = delay
        self._task: asyncio.Task[None] | None = None
        self.created_nodes: set[str] = set()

    async def _step(self) -> None:
        for machine in (await self.client.list(MACHINE)).items:
            meta = machine["metadata"]
            name = meta["name"]
            if meta.get("deletionTimestamp"):
                await self.client.delete(NODE, name, missing_ok=True)
                if meta.get("finalizers"):
                    with contextlib.suppress(NotFoundError):
                        await self.client.patch(MACHINE, name, {"metadata": {"finalizers": None}})
                continue
            if (machine.get("status") or {}).get("nodeName"):
                continue
            if self.delay:
                await asyncio.sleep(self.delay)
            spec = machine["spec"]
            gpus = int(str((spec.get("resources") or {}).get("requests", {}).get(GPU_RESOURCE, "1")))
            node = gpu_node_manifest(name, instance_type=spec["instanceType"], gpus=gpus,
                                     labels={**(spec.get("nodeLabels") or {}), LABEL_MACHINE: name},
                                     taints=[dict(t) for t in spec.get("taints") or []])
            with contextlib.suppress(Exception):
                await self.client.create(node)
            self.created_nodes.add(name)
            await self.client.patch_status(MACHINE, name, {"status": {
                "nodeName": name, "providerID": f"kwok://{name}",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "simulated",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a conflict or a race with a delete: try again next round
                pass
            await asyncio.sleep(0.3)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def cleanup(self) -> None:
        """Delete what is left (Machines of failed tests, their nodes)."""
        for name in sorted(self.created_nodes):
            await self.client.delete(NODE, name, missing_ok=True)


async def delete_all_workspaces(client: Client, namespace: str, timeout: float = 30) -> None:
    for ws in (await client.list(WORKSPACE, namespace)).items:
        await client.delete(WORKSPACE, ws["metadata"]["name"], namespace, missing_ok=True)

    async def gone() -> bool:
        return not (await client.list(WORKSPACE, namespace)).items

    await eventually(gone, timeout, message="workspaces deleted")


def manager_settings(namespace: str) -> ManagerSettings:
    return ManagerSettings(namespace=namespace, http_port=None, handle_signals=False,
                           graceful_shutdown_timeout=3, name="kaito-workspace-test")


def machine_controller_available() -> bool:
    """The real Machine controller and the simulated provisioner, when they are installed."""
    if os.environ.get("KAITO_TEST_SIMULATE_MACHINES"):
        return False
    try:
        from kaito_core.controllers.machine import add_machine_controller  # noqa: F401
        from kaito_core.provisioning import SimulatedProvisioner  # noqa: F401
    except ImportError:
        return False
    return True


async def new_manager(cluster: Cluster, namespace: str, settings: WorkspaceSettings | None = None, *,
                      machines: bool = False) -> Manager:
    """A manager with the Workspace controller; with ``machines`` also the Machine controller and the
    simulated provisioner (Machines scoped to this test's namespace)."""
    manager = await Manager.from_kubeconfig(cluster.kubeconfig, manager_settings(namespace))
    if machines:
        # First: it scopes the shared Machine informer to this test's namespace (a cache selector).
        from kaito_core.controllers.machine import MachineControllerSettings, add_machine_controller
        from kaito_core.provisioning import SimulatedProvisioner, SimulatedSettings

        add_machine_controller(manager, SimulatedProvisioner(SimulatedSettings(launch_delay=0.2)),
                               MachineControllerSettings(machine_selector=f"kaito.sh/workspacenamespace={namespace}",
                                                         poll_interval=0.5, gc_enabled=False))
    add_workspace_controller(manager, settings or WorkspaceSettings(requeue_seconds=5),
                             provisioner="simulated" if machines else None)
    return manager


@contextlib.asynccontextmanager
async def running_controller(cluster: Cluster, namespace: str, *, simulate_machines: bool = True,
                             settings: WorkspaceSettings | None = None) -> AsyncIterator[tuple[Manager, Client]]:
    """A manager with the Workspace controller and Machines made Ready running; yields (manager, client).

    Machines are made Ready by the real Machine controller with the simulated provisioner when it
    is installed (``KAITO_TEST_SIMULATE_MACHINES=1`` forces the stand-in), else by MachineSimulator.
    """
    real = simulate_machines and machine_controller_available()
    manager = await new_manager(cluster, namespace, settings, machines=real)
    client = manager.client
    await install_crds(cluster, client)
    simulator = MachineSimulator(client)
    if simulate_machines and not real:
        simulator.start()
    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: manager.ready or task.done(), 60, message="manager ready")
        if task.done():
            task.result()
        yield manager, client
    finally:
        # Tear the test's Workspaces down while the controller still runs (their finalizers).
        with contextlib.suppress(Exception):
            await delete_all_workspaces(client, namespace)
        manager.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await simulator.stop()
        await simulator.cleanup()
        await client.close()
