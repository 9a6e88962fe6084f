"""The AKS provisioner against the real control plane (kwok) and the fake ARM: the happy path, end to end.

Driven through the provisioner's own protocol methods (create/get/list/delete),
as the Machine reconciler will call them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aks_support import MakeProvisioner, gpu_machine
from fake_arm import FakeARM
from kaito_provisioner_aks import AGENTPOOL_LABEL, GPU_TAINT, pool_name
from kubernetes_asyncio import client as k8s

from kaito_core.api import Machine
from kaito_core.engine import Client
from kaito_core.testing import wait_for_node_ready

pytestmark = pytest.mark.e2e


async def _node_or_none(kube_api: k8s.ApiClient, name: str) -> Any:
    try:
        return await k8s.CoreV1Api(kube_api).read_node(name, _request_timeout=10)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def _wait_node_gone(kube_api: k8s.ApiClient, name: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await _node_or_none(kube_api, name) is None:
                return
            await asyncio.sleep(0.2)


async def test_create_makes_one_pool_and_a_ready_node_then_delete_removes_both(
        fake_arm: FakeARM, make_provisioner: MakeProvisioner, kube_api: k8s.ApiClient,
        arm_kube: Client) -> None:
    provisioner = await make_provisioner()
    machine = Machine.model_validate(gpu_machine("ws-phi-3-0", annotations={"kaito.sh/node-image-family": "AzureLinux"},
                                                 storage="256Gi"))
    pool = pool_name("ws-phi-3-0")
    before = fake_arm.snapshot()

    ref = await provisioner.create(machine)

    create_calls = fake_arm.snapshot() - before
    # exactly one agent pool, made by exactly one PUT
    assert list(fake_arm.pools) == [pool]
    assert create_calls["PUT agentPool"] == 1
    props = fake_arm.pools[pool]["properties"]
    assert props["vmSize"] == "Standard_NC6s_v3"
    assert props["count"] == 1
    assert props["type"] == "VirtualMachineScaleSets"
    assert props["osType"] == "Linux"
    assert props["osSKU"] == "AzureLinux"
    assert props["osDiskSizeGB"] == 256
    assert props["mode"] == "User"
    assert GPU_TAINT in props["nodeTaints"]
    labels = props["nodeLabels"]
    assert labels["kaito.sh/workspace"] == "phi-3"
    assert labels["kaito.sh/workspacenamespace"] == "default"
    assert labels["kaito.sh/machine-type"] == "gpu"
    assert labels["kaito.sh/machine"] == "ws-phi-3-0"
    assert labels["apps"] == "phi-3"
    assert "kaito.sh/creation-timestamp" in labels

    # the Node AKS would register: found by the agentpool label, its providerID reported
    node_name = fake_arm.node_name(pool)
    assert ref.provider_id == fake_arm.provider_id(pool)
    assert ref.provider_id.startswith(f"azure:///subscriptions/{fake_arm.subscription}/resourceGroups/")
    assert f"/virtualMachineScaleSets/aks-{pool}-" in ref.provider_id
    assert ref.node_name == node_name
    assert ref.ready and ref.instance_type == "Standard_NC6s_v3" and ref.machine_name == "ws-phi-3-0"
    node = await wait_for_node_ready(kube_api, node_name, timeout=30)
    assert node.spec.provider_id == ref.provider_id
    assert node.metadata.labels[AGENTPOOL_LABEL] == pool
    assert node.status.capacity["nvidia.com/gpu"] == "1"
    assert any(t.key == "sku" and t.value == "gpu" and t.effect == "NoSchedule" for t in node.spec.taints)

    # idempotent: again (as after a crash) returns the same node, no second PUT
    again = await provisioner.create(machine)
    assert again.provider_id == ref.provider_id and again.node_name == ref.node_name
    assert fake_arm.calls["PUT agentPool"] == 1
    got = await provisioner.get(machine)
    assert got is not None and got.provider_id == ref.provider_id
    listed = await provisioner.list()
    assert [r.provider_id for r in listed] == [ref.provider_id]
    assert listed[0].machine_name == "ws-phi-3-0" and listed[0].created_at is not None

    before_delete = fake_arm.snapshot()
    await provisioner.delete(machine)
    delete_calls = fake_arm.snapshot() - before_delete
    assert fake_arm.pools == {}
    await _wait_node_gone(kube_api, node_name)
    assert await provisioner.get(machine) is None
    await provisioner.delete(machine)  # gone already: success

    # ARM calls per provisioned node: the pre-GET, the SKU and usage reads (cached afterwards),
    # the PUT, a few status polls at the server's Retry-After, the final GET. No storms.
    report = {"create": dict(create_calls), "create_total": sum(create_calls.values()),
              "delete": dict(delete_calls), "delete_total": sum(delete_calls.values())}
    print("ARM calls per provisioned node:", json.dumps(report, sort_keys=True))
    assert create_calls["GET operation"] <= 3  # 1 s operation, Retry-After: 1
    assert sum(create_calls.values()) <= 8
    assert sum(delete_calls.values()) <= 4
