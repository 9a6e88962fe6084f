"""The byo provisioner: Machines are satisfied by existing matching nodes, never made or deleted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from machine_support import cleanup_machines, condition, eventually, machine_manifest, run_id, running_controller

from kaito_core.engine import NODE
from kaito_core.provisioning import MACHINE, BYOProvisioner, BYOSettings, load_provisioner
from kaito_core.testing import Cluster


async def test_byo_claims_a_matching_node_and_says_when_none_is_left(
        kube_cluster: Cluster, make_gpu_node: Callable[..., Awaitable[Any]]) -> None:
    run = run_id()
    pool = {"kaito.sh/byo-pool": run}
    await make_gpu_node(f"byo-a-{run}", instance_type="Standard_NC6s_v3", gpus=1, labels=pool)
    await make_gpu_node(f"byo-b-{run}", instance_type="Standard_NC24s_v3", gpus=4, labels=pool)
    provisioner = load_provisioner("byo", {"node_selector": f"kaito.sh/byo-pool={run}", "retry_after": 1})
    assert isinstance(provisioner, BYOProvisioner)
    assert provisioner.settings == BYOSettings(node_selector=f"kaito.sh/byo-pool={run}", retry_after=1)
    async with running_controller(kube_cluster.kubeconfig, provisioner, run, retry_backoff_max=2) as (manager, _):
        client = manager.client
        first, second = f"first-{run}", f"second-{run}"
        await client.create(machine_manifest(first, run, instance_type="Standard_NC6s_v3"))

        async def ready(name: str) -> bool:
            return condition(await client.get_or_none(MACHINE, name), "Ready").get("status") == "True"

        await eventually(lambda: ready(first), 30, message="first Machine Ready on the existing node")
        machine = await client.get(MACHINE, first)
        assert machine["status"]["nodeName"] == f"byo-a-{run}"
        node = await client.get(NODE, f"byo-a-{run}")
        assert node["metadata"]["labels"]["kaito.sh/machine"] == first

        # The only other node is the wrong size: a clear condition, no node made.
        await client.create(machine_manifest(second, run, instance_type="Standard_NC6s_v3"))

        async def no_match() -> bool:
            cond = condition(await client.get_or_none(MACHINE, second), "Launched")
            return cond.get("reason") == "NoMatchingNode"

        await eventually(no_match, 30, message="NoMatchingNode condition")
        message = condition(await client.get(MACHINE, second), "Launched")["message"]
        assert f"byo-a-{run}: claimed by Machine {first}" in message, message
        assert f"byo-b-{run}: instance type Standard_NC24s_v3, not Standard_NC6s_v3" in message, message
        nodes = await client.list(NODE, label_selector=f"kaito.sh/byo-pool={run}")
        assert len(nodes.items) == 2

        # Deleting the Machine releases the node; it stays, schedulable, without our claim.
        await client.delete(MACHINE, first)

        async def released() -> bool:
            node = await client.get_or_none(NODE, f"byo-a-{run}")
            return node is not None and "kaito.sh/machine" not in node["metadata"]["labels"] \
                and await client.get_or_none(MACHINE, first) is None

        await eventually(released, 30, message="node released")
        node = await client.get(NODE, f"byo-a-{run}")
        assert not node["spec"].get("unschedulable"), "byo must not cordon a node it does not own"
        # ... and the waiting Machine gets it.
        await eventually(lambda: ready(second), 60, message="second Machine takes the released node")
        await cleanup_machines(client, run)
        assert await client.get_or_none(NODE, f"byo-a-{run}") is not None


async def test_a_node_with_an_ephemeral_taint_is_not_initialized_until_it_goes(
        kube_cluster: Cluster, make_gpu_node: Callable[..., Awaitable[Any]]) -> None:
    """Ready with GPUs is not enough: while Kubernetes' own "not yet" taint is on the node (here the
    cloud provider's, which nothing in this cluster lifts), a pod sent there would be Unschedulable,
    so the Machine stays Initialized=Unknown, naming the taint; once it is gone the Machine is Ready."""
    run = run_id()
    pool = {"kaito.sh/byo-pool": run}
    uninitialized = {"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true",
                     "effect": "NoSchedule"}
    node_name = f"byo-t-{run}"
    await make_gpu_node(node_name, gpus=1, labels=pool,
                        taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule"}, uninitialized])
    provisioner = load_provisioner("byo", {"node_selector": f"kaito.sh/byo-pool={run}", "retry_after": 1})
    async with running_controller(kube_cluster.kubeconfig, provisioner, run, retry_backoff_max=2) as (manager, _):
        client = manager.client
        name = f"tainted-{run}"
        await client.create(machine_manifest(name, run, instance_type="Standard_NC6s_v3"))

        async def waiting_on_taint() -> bool:
            machine = await client.get_or_none(MACHINE, name)
            cond = condition(machine, "Initialized")
            return (condition(machine, "Registered").get("status") == "True" and cond.get("status") == "Unknown"
                    and "node.cloudprovider.kubernetes.io/uninitialized:NoSchedule" in cond.get("message", ""))

        await eventually(waiting_on_taint, 30, message="Initialized=Unknown naming the taint")
        machine = await client.get(MACHINE, name)
        assert condition(machine, "Ready").get("status") == "False"
        node = await client.get(NODE, node_name)
        kept = [t for t in node["spec"]["taints"] if t["key"] != uninitialized["key"]]
        await client.patch(NODE, node_name, {"spec": {"taints": kept}})

        async def ready() -> bool:
            return condition(await client.get_or_none(MACHINE, name), "Ready").get("status") == "True"

        await eventually(ready, 30, message="Machine Ready once the taint is gone")
        await cleanup_machines(client, run)
