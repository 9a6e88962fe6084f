"""The seed Workspace through the whole operator on the AKS provisioner, against the fake ARM.

Standard_NC6s_v3 becomes one agent pool whose Node kwok marks Ready, so the
Workspace reaches ResourceReady; a quota shortfall reaches the Workspace's own
condition with the figures; deleting the Workspaces deletes the pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aks_support import FakeCredential, settings_for
from fake_arm import FakeARM
from kaito_provisioner_aks import AKSProvisioner

from kaito_core.api.crd import all_crds
from kaito_core.controllers.machine import MachineControllerSettings
from kaito_core.engine import Client, ManagerSettings
from kaito_core.manager import Operator, OperatorSettings, WebhookSettings
from kaito_core.testing import Cluster, eventually

pytestmark = pytest.mark.e2e

SEED = Path(__file__).parents[2] / "examples" / "kaito_workspace_phi_3.yaml"


@pytest.fixture
async def operator(fake_arm: FakeARM, arm_kube: Client, kube_cluster: Cluster,
                   kube_namespace: str) -> AsyncIterator[Operator]:
    for crd in all_crds():
        await asyncio.to_thread(kube_cluster.kubectl, "apply", "--server-side", "--force-conflicts", "-f", "-",
                                input=json.dumps(crd))
    settings = OperatorSettings(
        provisioner="aks",
        webhook=WebhookSettings(enabled=False),
        manager=ManagerSettings(http_port=None, handle_signals=False, graceful_shutdown_timeout=5),
        # Only this test's Machines: the session cluster is shared with other tests.
        machine=MachineControllerSettings(poll_interval=0.5, gc_enabled=False,
                                          machine_selector=f"kaito.sh/workspacenamespace={kube_namespace}"),
    )
    provisioner = AKSProvisioner(settings_for(fake_arm), credential=FakeCredential())
    op = await Operator.create(settings, kubeconfig=kube_cluster.kubeconfig, provisioner=provisioner)
    task = asyncio.create_task(op.run())
    try:
        yield op
    finally:
        op.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


def _conditions(cluster: Cluster, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    got = cluster.kubectl("get", "workspace", name, "-n", namespace, "-o", "json", check=False)
    if got.returncode != 0:
        return {}
    return {c["type"]: c for c in json.loads(got.stdout).get("status", {}).get("conditions", [])}


async def test_seed_workspace_gets_an_agent_pool_and_deleting_it_removes_the_pool(
        operator: Operator, fake_arm: FakeARM, kube_cluster: Cluster, kube_namespace: str) -> None:
    def kubectl(*args: str, input: str | None = None) -> Any:
        return asyncio.to_thread(kube_cluster.kubectl, *args, input=input)

    await kubectl("apply", "-n", kube_namespace, "-f", str(SEED))

    async def resource_ready() -> bool:
        conds = await asyncio.to_thread(_conditions, kube_cluster, kube_namespace, "workspace-phi-3-mini")
        return conds.get("ResourceReady", {}).get("status") == "True"

    await eventually(resource_ready, 90, message="ResourceReady through the AKS provisioner")
    assert len(fake_arm.pools) == 1
    (pool,) = fake_arm.pools.values()
    properties = pool.get("properties", pool)
    assert properties["vmSize"] == "Standard_NC6s_v3" and properties["count"] == 1
    assert properties["nodeLabels"]["kaito.sh/workspace"] == "workspace-phi-3-mini"
    assert properties["nodeLabels"]["kaito.sh/workspacenamespace"] == kube_namespace
    assert "sku=gpu:NoSchedule" in properties["nodeTaints"]
    calls_per_node = fake_arm.count()
    print(f"ARM calls for one provisioned node through the operator: {calls_per_node} {dict(fake_arm.calls)}")
    assert calls_per_node <= 12, f"too many ARM calls for one node: {dict(fake_arm.calls)}"

    # A shortfall is reported on the Workspace itself, with the figures, before anything is created.
    medium = yaml.safe_load(SEED.read_text())
    medium["metadata"]["name"] = "workspace-phi-3-medium"
    medium["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    medium["resource"]["labelSelector"]["matchLabels"] = {"apps": "phi-3-medium"}
    medium["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"
    await kubectl("apply", "-n", kube_namespace, "-f", "-", input=yaml.safe_dump(medium))

    async def quota_reported() -> str | None:
        conds = await asyncio.to_thread(_conditions, kube_cluster, kube_namespace, "workspace-phi-3-medium")
        message = str(conds.get("ResourceReady", {}).get("message", ""))
        return message if "quota 0 of 0 left in westus2" in message else None

    message = await eventually(quota_reported, 60, message="the quota shortfall on the Workspace")
    assert "Standard_NC24ads_A100_v4 needs 24 vCPUs of family standardNCADSA100v4Family" in message
    assert len(fake_arm.pools) == 1  # no pool was attempted for it

    await kubectl("delete", "workspace", "--all", "-n", kube_namespace, "--timeout=50s")
    await eventually(lambda: not fake_arm.pools, 60, message="the agent pool to be deleted")
    machines = await kubectl("get", "machines.kaito.sh", "-l", f"kaito.sh/workspacenamespace={kube_namespace}",
                             "-o", "name")
    assert machines.stdout.strip() == ""
