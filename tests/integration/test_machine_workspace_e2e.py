"""The two reconcilers together: a Workspace gets its GPU node from the Machine controller and the
simulated provisioner (no stand-in), and deleting the Workspace takes Machine and Node away."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from machine_support import condition, eventually, install_machine_crd

from kaito_core.api.crd import workspace_crd
from kaito_core.controllers.machine import MachineControllerSettings, add_machine_controller
from kaito_core.controllers.workspace import WORKSPACE, add_workspace_controller
from kaito_core.engine import CRD, NODE, Manager, ManagerSettings, NotFoundError
from kaito_core.provisioning import MACHINE, SimulatedProvisioner, SimulatedSettings
from kaito_core.testing import Cluster

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kaito_workspace_phi_3.yaml"


async def test_workspace_gets_its_node_from_the_machine_controller(kube_cluster: Cluster,
                                                                   kube_namespace: str) -> None:
    ns = kube_namespace
    manager = await Manager.from_kubeconfig(kube_cluster.kubeconfig, ManagerSettings(
        namespace=ns, http_port=None, handle_signals=False, graceful_shutdown_timeout=2))
    client = manager.client
    provisioner = SimulatedProvisioner(SimulatedSettings(launch_delay=0.5))
    add_workspace_controller(manager, provisioner="simulated")
    add_machine_controller(manager, provisioner, MachineControllerSettings(
        machine_selector=f"kaito.sh/workspacenamespace={ns}", poll_interval=0.5, gc_enabled=False))
    await install_machine_crd(client)
    await client.apply(workspace_crd(), kind=CRD, force=True)

    async def served() -> bool:
        try:
            await client.list_page(WORKSPACE, ns, limit=1)
            return True
        except NotFoundError:
            return False

    await eventually(served, 30, message="Workspace CRD served")
    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: manager.ready or task.done(), 60, message="manager ready")
        workspace: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
        workspace["metadata"]["namespace"] = ns
        workspace["apiVersion"] = WORKSPACE.api_version  # same schema in both served versions
        name = workspace["metadata"]["name"]
        await client.create(workspace, kind=WORKSPACE)

        async def ws_ready() -> bool:
            ws = await client.get_or_none(WORKSPACE, name, ns)
            return condition(ws, "WorkspaceReady").get("status") == "True"

        try:
            await eventually(ws_ready, 120, interval=0.5, message="Workspace Ready on a provisioned node")
        except AssertionError:
            ws = await client.get_or_none(WORKSPACE, name, ns)
            machines = (await client.list(MACHINE)).items
            raise AssertionError(f"Workspace not Ready: {(ws or {}).get('status')}; machines: "
                                 f"{[(m['metadata']['name'], m.get('status')) for m in machines]}") from None
        machines = (await client.list(MACHINE, label_selector=f"kaito.sh/workspacenamespace={ns}")).items
        assert len(machines) == 1
        machine = machines[0]
        for type_ in ("Launched", "Registered", "Initialized", "Ready"):
            assert condition(machine, type_)["status"] == "True", machine["status"]
        node = await client.get(NODE, machine["status"]["nodeName"])
        assert node["metadata"]["labels"]["kaito.sh/workspace"] == name
        assert node["metadata"]["labels"]["kaito.sh/workspacenamespace"] == ns
        assert provisioner.calls["nodes_created"] == 1

        await client.delete(WORKSPACE, name, ns)

        async def all_gone() -> bool:
            return (await client.get_or_none(WORKSPACE, name, ns) is None
                    and await client.get_or_none(MACHINE, machine["metadata"]["name"]) is None
                    and await client.get_or_none(NODE, node["metadata"]["name"]) is None)

        try:
            await eventually(all_gone, 60, message="Workspace, Machine and Node gone")
        except AssertionError:
            ws = await client.get_or_none(WORKSPACE, name, ns)
            left = await client.get_or_none(MACHINE, machine["metadata"]["name"])
            raise AssertionError(f"not torn down: workspace {(ws or {}).get('metadata')} {(ws or {}).get('status')}"
                                 f"; machine {left}; node {await client.get_or_none(NODE, node['metadata']['name'])}"
                                 ) from None
    finally:
        manager.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await client.close()
