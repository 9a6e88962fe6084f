"""The karpenter provisioner against the real Karpenter (v1, its kwok cloud provider).

Karpenter runs as a process beside the test control plane (kaito_core.testing.karpenter); its
kwok provider creates the Nodes, kwok makes them Ready. Instance types are our GPU SKU catalog,
less one SKU, so that Karpenter itself reports an instance type it cannot launch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kaito_provisioner_karpenter import NODECLAIM, KarpenterProvisioner, KarpenterSettings, node_pool_manifest
from machine_support import cleanup_machines, condition, machine_manifest, run_id, running_controller

from kaito_core.api.crd import all_crds
from kaito_core.controllers.machine import MachineControllerSettings
from kaito_core.engine import NODE, ManagerSettings
from kaito_core.manager import Operator, OperatorSettings, WebhookSettings
from kaito_core.provisioning import MACHINE
from kaito_core.testing import Cluster, ControlPlane, eventually
from kaito_core.testing.karpenter import (
    KWOK_NODE_CLASS_GROUP,
    KarpenterKwok,
    instance_types_from_catalog,
    kwok_node_class,
)

pytestmark = pytest.mark.e2e

SEED = Path(__file__).parents[2] / "examples" / "kaito_workspace_phi_3.yaml"
STARTUP = {"key": "nvidia.com/gpu-driver", "value": "installing", "effect": "NoSchedule"}
UNSOLD = "Standard_NC24s_v3"  # in our catalog, not in Karpenter's instance types


@pytest.fixture(scope="module")
def karpenter(kube_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KarpenterKwok]:
    if not isinstance(kube_cluster, ControlPlane):
        pytest.skip("needs the local control plane's kwok to make Karpenter's Nodes act")
    types = [t for t in instance_types_from_catalog() if t["name"] != UNSOLD]
    started = time.monotonic()
    with KarpenterKwok(kube_cluster, instance_types=types, workdir=tmp_path_factory.mktemp("karpenter")) as k:
        print(f"Karpenter ready in {time.monotonic() - started:.1f}s")
        k.apply(kwok_node_class("default"), kwok_node_class("slow", registration_delay="3s"),
                node_pool_manifest("kaito", {"group": KWOK_NODE_CLASS_GROUP, "kind": "KWOKNodeClass",
                                             "name": "default"}))
        yield k
        k.check_alive()  # Karpenter outlived every test of the module


def _plugin(**settings: Any) -> KarpenterProvisioner:
    return KarpenterProvisioner(KarpenterSettings(node_class_kind="KWOKNodeClass", **settings))


async def _nodeclaims(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    out = await asyncio.to_thread(cluster.kubectl, "get", "nodeclaims", "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


async def _nodepools(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    out = await asyncio.to_thread(cluster.kubectl, "get", "nodepools", "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


async def _nodes(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    out = await asyncio.to_thread(cluster.kubectl, "get", "nodes", "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


def _ready(obj: dict[str, Any], type_: str = "Ready") -> bool:
    return any(c["type"] == type_ and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions") or ())


async def test_a_machine_round_trips_through_real_karpenter(karpenter: KarpenterKwok, kube_cluster: Cluster) -> None:
    run = run_id()
    name = f"kc-{run}"
    async with running_controller(kube_cluster.kubeconfig, _plugin(node_class_name="slow"), run,
                                  retry_backoff_max=2) as (manager, _):
        client = manager.client
        body = machine_manifest(name, run, instance_type="Standard_NC12s_v3", gpus=2,
                                startup_taints=[STARTUP], node_labels={"team": "vision"})
        body["spec"]["resources"]["requests"]["storage"] = "100Gi"
        await client.create(body)

        # While Karpenter waits for the Node (the "slow" node class registers after 3 s), the
        # NodeClaim's own conditions show on the Machine, which is launched once Karpenter has
        # registered the Node (before that it is tainted karpenter.sh/unregistered, without our labels).
        async def mirrored() -> bool:
            message = condition(await client.get_or_none(MACHINE, name), "Launched").get("message", "")
            return f"NodeClaim {name}: Launched=True, Registered=Unknown" in message

        await eventually(mirrored, 30, interval=0.1, message="NodeClaim conditions mirrored")

        async def machine_ready() -> bool:
            return condition(await client.get_or_none(MACHINE, name), "Ready").get("status") == "True"

        await eventually(machine_ready, 60, message="Machine Ready through Karpenter",
                         describe=lambda: karpenter.log_tail(10))
        # Karpenter marks it Initialized once kaito-core has removed the startup taint.
        async def initialized() -> dict[str, Any] | None:
            nodeclaim = await client.get(NODECLAIM, name)
            return nodeclaim if _ready(nodeclaim, "Initialized") else None

        def why() -> str:
            got = kube_cluster.kubectl("get", "nodeclaim", name, "-o", "json", check=False).stdout
            conditions = json.loads(got or "{}").get("status", {}).get("conditions", [])
            nodes = kube_cluster.kubectl("get", "nodes", "-l", f"kaito.sh/machine={name}", "-o",
                                         "jsonpath={.items[*].spec.taints}", check=False).stdout
            return f"NodeClaim conditions {conditions}; Node taints {nodes}"

        nodeclaim = await eventually(initialized, 30, message="NodeClaim Initialized", describe=why)
        assert "karpenter.sh/termination" in nodeclaim["metadata"]["finalizers"]
        machine = await client.get(MACHINE, name)
        node_name = nodeclaim["status"]["nodeName"]
        assert machine["status"]["providerID"] == nodeclaim["status"]["providerID"] == f"kwok://{node_name}"
        assert machine["status"]["nodeName"] == node_name
        node = await client.get(NODE, node_name)
        assert node["metadata"]["labels"]["kaito.sh/machine"] == name and node["metadata"]["labels"]["team"] == "vision"
        assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "Standard_NC12s_v3"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"  # from the SKU catalog, through Karpenter
        assert any(t["key"] == "sku" for t in node["spec"]["taints"])
        assert not any(t["key"] == STARTUP["key"] for t in node["spec"].get("taints") or [])

        # An instance type Karpenter cannot launch: Launched=Unknown/LaunchFailed on the NodeClaim
        # becomes a typed condition on the Machine, and the NodeClaim is replaced.
        await client.create(machine_manifest(f"nosku-{run}", run, instance_type=UNSOLD))

        async def unavailable() -> str | None:
            cond = condition(await client.get_or_none(MACHINE, f"nosku-{run}"), "Launched")
            return cond.get("message") if cond.get("reason") == "InstanceTypeUnavailable" else None

        message = await eventually(unavailable, 30, message="InstanceTypeUnavailable from Karpenter")
        assert f"Karpenter could not launch NodeClaim nosku-{run}" in message and UNSOLD in message, message

        # Deleting the Machine deletes the NodeClaim; Karpenter's finalizer takes the Node with it.
        await client.delete(MACHINE, name)

        async def gone() -> bool:
            return (await client.get_or_none(MACHINE, name) is None
                    and await client.get_or_none(NODECLAIM, name) is None
                    and await client.get_or_none(NODE, node_name) is None)

        await eventually(gone, 30, message="Machine, NodeClaim and Node gone")
        await cleanup_machines(client, run)
        assert await client.get_or_none(NODECLAIM, f"nosku-{run}") is None


async def test_no_capacity_is_reported_when_karpenter_deletes_the_nodeclaim(
        karpenter: KarpenterKwok, kube_cluster: Cluster) -> None:
    # Karpenter deletes a NodeClaim it has no capacity for (here: its KWOKNodeClass does not exist)
    # and says so only in an Event; the plugin reports it as InsufficientCapacity and asks again.
    run = run_id()
    name = f"ice-{run}"
    async with running_controller(kube_cluster.kubeconfig, _plugin(node_class_name="missing"), run,
                                  retry_backoff_max=2) as (manager, _):
        client = manager.client
        await client.create(machine_manifest(name, run))

        async def capacity() -> str | None:
            cond = condition(await client.get_or_none(MACHINE, name), "Launched")
            return cond.get("message") if cond.get("reason") == "InsufficientCapacity" else None

        message = await eventually(capacity, 30, message="InsufficientCapacity from Karpenter")
        assert f"Karpenter deleted NodeClaim {name} before it launched" in message, message
        assert "KWOKNodeClass 'missing'" in message
        await cleanup_machines(client, run)


@pytest.fixture
async def operator(karpenter: KarpenterKwok, kube_cluster: Cluster, kube_namespace: str) -> AsyncIterator[Operator]:
    for crd in all_crds():
        await asyncio.to_thread(kube_cluster.kubectl, "apply", "--server-side", "--force-conflicts", "-f", "-",
                                input=json.dumps(crd))
    settings = OperatorSettings(
        provisioner="karpenter",
        webhook=WebhookSettings(enabled=False),
        manager=ManagerSettings(http_port=None, handle_signals=False, graceful_shutdown_timeout=5),
        # Only this test's Machines: the session cluster is shared with other tests.
        machine=MachineControllerSettings(poll_interval=0.5, gc_enabled=False,
                                          machine_selector=f"kaito.sh/workspacenamespace={kube_namespace}"),
    )
    # One NodePool per Workspace, as Kaito v0.12 makes them.
    op = await Operator.create(settings, kubeconfig=kube_cluster.kubeconfig,
                               provisioner=_plugin(node_pool_per_workspace=True))
    task = asyncio.create_task(op.run())
    try:
        yield op
    finally:
        op.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


def _workspace_conditions(cluster: Cluster, namespace: str) -> dict[str, dict[str, dict[str, Any]]]:
    out = cluster.kubectl("get", "workspaces", "-n", namespace, "-o", "json")
    return {ws["metadata"]["name"]: {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or ()}
            for ws in json.loads(out.stdout)["items"]}


async def test_seed_workspace_gets_a_node_through_real_karpenter_and_deleting_it_leaves_none(
        operator: Operator, karpenter: KarpenterKwok, kube_cluster: Cluster, kube_namespace: str) -> None:
    selector = f"kaito.sh/workspacenamespace={kube_namespace}"
    await asyncio.to_thread(kube_cluster.kubectl, "apply", "-n", kube_namespace, "-f", str(SEED))

    async def resource_ready() -> bool:
        conds = await asyncio.to_thread(_workspace_conditions, kube_cluster, kube_namespace)
        return conds.get("workspace-phi-3-mini", {}).get("ResourceReady", {}).get("status") == "True"

    await eventually(resource_ready, 90, message="ResourceReady through the real Karpenter",
                     describe=lambda: karpenter.log_tail(10))
    # Machine -> NodeClaim -> Node, each Ready, each naming the next (Karpenter's Ready may trail ours).
    (machine,) = (await operator.manager.client.list(MACHINE, label_selector=selector)).items

    async def nodeclaim_ready() -> dict[str, Any] | None:
        (nodeclaim,) = await _nodeclaims(kube_cluster, selector)
        return nodeclaim if _ready(nodeclaim) else None

    nodeclaim = await eventually(nodeclaim_ready, 30, message="NodeClaim Ready")
    (node,) = await _nodes(kube_cluster, selector)
    assert nodeclaim["metadata"]["name"] == machine["metadata"]["name"]
    assert condition(machine, "Ready")["status"] == "True" and _ready(nodeclaim) and _ready(node)
    assert machine["status"]["providerID"] == nodeclaim["status"]["providerID"] == node["spec"]["providerID"]
    assert nodeclaim["status"]["nodeName"] == node["metadata"]["name"] == machine["status"]["nodeName"]
    labels = node["metadata"]["labels"]
    assert labels["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
    assert labels["apps"] == "phi-3" and labels["kaito.sh/workspace"] == "workspace-phi-3-mini"
    assert labels["karpenter.sh/nodepool"] == f"{kube_namespace}-workspace-phi-3-mini"
    assert labels["karpenter.sh/initialized"] == "true"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    (pool,) = await _nodepools(kube_cluster, selector)
    assert pool["metadata"]["name"] == f"{kube_namespace}-workspace-phi-3-mini" and _ready(pool)

    await asyncio.to_thread(kube_cluster.kubectl, "delete", "workspace", "--all", "-n", kube_namespace,
                            "--timeout=60s")

    async def nothing_left() -> bool:
        machines = (await operator.manager.client.list(MACHINE, label_selector=selector)).items
        return not machines and not await _nodeclaims(kube_cluster, selector) and not await _nodes(
            kube_cluster, selector) and not await _nodepools(kube_cluster, selector)

    await eventually(nothing_left, 60, message="no Machine, NodeClaim, Node or NodePool left")


async def test_twenty_workspaces_at_once_make_exactly_twenty_nodeclaims(
        operator: Operator, karpenter: KarpenterKwok, kube_cluster: Cluster, kube_namespace: str) -> None:
    selector = f"kaito.sh/workspacenamespace={kube_namespace}"
    seed = yaml.safe_load(SEED.read_text())
    docs = []
    for i in range(20):
        ws = json.loads(json.dumps(seed))
        ws["metadata"]["name"] = f"phi-{i:02d}"
        ws["resource"]["labelSelector"]["matchLabels"] = {"apps": f"phi-{i:02d}"}
        docs.append(ws)
    started = time.monotonic()
    await asyncio.to_thread(kube_cluster.kubectl, "apply", "-n", kube_namespace, "-f", "-",
                            input=yaml.safe_dump_all(docs))

    async def all_ready() -> bool:
        conds = await asyncio.to_thread(_workspace_conditions, kube_cluster, kube_namespace)
        return len(conds) == 20 and all(c.get("ResourceReady", {}).get("status") == "True" for c in conds.values())

    await eventually(all_ready, 150, interval=1, message="20 Workspaces ResourceReady through the real Karpenter")
    print(f"20 Workspaces ResourceReady through the real Karpenter in {time.monotonic() - started:.1f}s")
    async def nodeclaims_ready() -> list[dict[str, Any]] | None:
        nodeclaims = await _nodeclaims(kube_cluster, selector)
        return nodeclaims if all(_ready(nc) for nc in nodeclaims) else None

    nodeclaims = await eventually(nodeclaims_ready, 30, message="every NodeClaim Ready")
    assert len(nodeclaims) == 20
    assert len({nc["metadata"]["labels"]["kaito.sh/workspace"] for nc in nodeclaims}) == 20  # one per Workspace
    # Karpenter made no NodeClaims of its own (for pending pods, say): every one in the cluster is a Machine's.
    everything = json.loads((await asyncio.to_thread(kube_cluster.kubectl, "get", "nodeclaims", "-o",
                                                     "json")).stdout)["items"]
    assert all("kaito.sh/machine" in nc["metadata"].get("labels", {}) for nc in everything), everything
    assert len(await _nodes(kube_cluster, selector)) == 20
    assert len(await _nodepools(kube_cluster, selector)) == 20  # one NodePool per Workspace

    await asyncio.to_thread(kube_cluster.kubectl, "delete", "workspace", "--all", "-n", kube_namespace,
                            "--timeout=90s")

    async def nothing_left() -> bool:
        return not any([await _nodeclaims(kube_cluster, selector), await _nodes(kube_cluster, selector),
                        await _nodepools(kube_cluster, selector)])

    await eventually(nothing_left, 90, message="no NodeClaim, Node or NodePool left")
