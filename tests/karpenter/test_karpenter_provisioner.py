"""The karpenter provisioner: NodeClaims made to Kaito's measure, round-tripped through a (fake) Karpenter."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from kaito_provisioner_karpenter import NODECLAIM, KarpenterProvisioner, KarpenterSettings
from karpenter_support import FakeKarpenter, install_nodeclaim_crd
from machine_support import cleanup_machines, condition, eventually, machine_manifest, run_id, running_controller

from kaito_core.api import Machine
from kaito_core.engine import NODE
from kaito_core.provisioning import MACHINE, ProvisionerContext, load_provisioner
from kaito_core.testing import Cluster

STARTUP = {"key": "nvidia.com/gpu-driver", "value": "installing", "effect": "NoSchedule"}


def _machine(**kwargs: Any) -> Machine:
    body = machine_manifest("falcon-0", "r1", instance_type="Standard_NC12s_v3", gpus=2,
                            node_labels={"team": "vision"}, startup_taints=[STARTUP], **kwargs)
    body["spec"]["resources"]["requests"]["storage"] = "100Gi"
    body["metadata"]["uid"] = "0000-1111"
    return Machine.from_dict(body)


def test_nodeclaim_for_a_machine() -> None:
    plugin = KarpenterProvisioner(KarpenterSettings(node_class_kind="KWOKNodeClass", node_class_name="gpu"))
    nodeclaim = plugin.nodeclaim_for(_machine(requirements=[
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["westus2-1"]}]))
    spec = nodeclaim["spec"]
    assert nodeclaim["apiVersion"] == "karpenter.sh/v1" and nodeclaim["kind"] == "NodeClaim"
    assert nodeclaim["metadata"]["name"] == "falcon-0"
    assert spec["nodeClassRef"] == {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "gpu"}
    assert spec["expireAfter"] == "Never"
    assert {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC12s_v3"]} \
        in spec["requirements"]
    assert {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]} in spec["requirements"]
    assert {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["westus2-1"]} in spec["requirements"]
    assert spec["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert spec["startupTaints"] == [STARTUP]
    assert spec["resources"]["requests"] == {"nvidia.com/gpu": "2"}, "no storage request: it blocks Initialized"
    labels = nodeclaim["metadata"]["labels"]
    assert labels["kaito.sh/machine"] == "falcon-0" and labels["kaito.sh/workspace"] == "ws"
    assert labels["team"] == "vision" and labels["karpenter.sh/nodepool"] == "kaito"
    assert labels["kaito.sh/provisioner"] == "karpenter"
    owner = nodeclaim["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Machine", "falcon-0", "0000-1111")


def test_node_class_kinds() -> None:
    groups = {kind: KarpenterSettings(node_class_kind=kind).node_class_ref()["group"]
              for kind in ("AKSNodeClass", "EC2NodeClass", "KWOKNodeClass", "KaitoNodeClass")}
    assert groups == {"AKSNodeClass": "karpenter.azure.com", "EC2NodeClass": "karpenter.k8s.aws",
                      "KWOKNodeClass": "karpenter.kwok.sh", "KaitoNodeClass": "kaito.sh"}
    with pytest.raises(ValueError, match="unknown NodeClass kind"):
        KarpenterProvisioner(KarpenterSettings(node_class_kind="GCENodeClass"))
    custom = KarpenterSettings(node_class_kind="GCENodeClass", node_class_group="karpenter.k8s.gcp")
    assert custom.node_class_ref()["group"] == "karpenter.k8s.gcp"
    # A GPU taint is added even when the Machine forgot it.
    machine = _machine()
    machine.spec.taints = None
    nodeclaim = KarpenterProvisioner().nodeclaim_for(machine)
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in nodeclaim["spec"]["taints"]


async def test_start_fails_clearly_without_karpenter() -> None:
    class NoCRDs:
        async def get_or_none(self, *args: Any, **kwargs: Any) -> None:
            return None

    with pytest.raises(RuntimeError, match=r"nodeclaims.karpenter.sh is not installed"):
        await KarpenterProvisioner().start(ProvisionerContext(client=NoCRDs(), logger=None))


async def test_a_machine_round_trips_through_a_nodeclaim(kube_cluster: Cluster) -> None:
    run = run_id()
    name = f"kc-{run}"
    plugin = load_provisioner("karpenter", {"node_class_kind": "KWOKNodeClass"})
    assert isinstance(plugin, KarpenterProvisioner)
    async with running_controller(kube_cluster.kubeconfig, plugin, run, retry_backoff_max=2) as (manager, _):
        client = manager.client
        await install_nodeclaim_crd(client)
        karpenter = FakeKarpenter(client, register_delay=1.5,
                                  fail_launch={"Standard_NC24s_v3": ("LaunchFailed",
                                                                     "InsufficientCapacityError: no capacity")})
        fake = asyncio.create_task(karpenter.run())
        try:
            body = machine_manifest(name, run, instance_type="Standard_NC12s_v3", gpus=2,
                                    startup_taints=[STARTUP], node_labels={"team": "vision"})
            body["spec"]["resources"]["requests"]["storage"] = "100Gi"
            await client.create(body)

            # While Karpenter registers the node, the NodeClaim's own conditions show on the Machine.
            async def mirrored() -> bool:
                message = condition(await client.get_or_none(MACHINE, name), "Registered").get("message", "")
                return f"NodeClaim {name}: Launched=True, Registered=Unknown" in message

            await eventually(mirrored, 30, interval=0.1, message="NodeClaim conditions mirrored")

            async def ready() -> bool:
                return condition(await client.get_or_none(MACHINE, name), "Ready").get("status") == "True"

            await eventually(ready, 60, message="Machine Ready through Karpenter")
            nodeclaim = await client.get(NODECLAIM, name)
            assert karpenter.seen[name]["spec"]["expireAfter"] == "Never"
            assert "storage" not in (nodeclaim["spec"].get("resources") or {}).get("requests", {})
            machine = await client.get(MACHINE, name)
            assert machine["status"]["providerID"] == nodeclaim["status"]["providerID"] == f"kwok://karpenter-{name}"
            assert machine["status"]["nodeName"] == nodeclaim["status"]["nodeName"] == f"karpenter-{name}"
            for type_ in ("Launched", "Registered", "Initialized"):
                assert condition(machine, type_)["status"] == "True"
            node = await client.get(NODE, f"karpenter-{name}")
            assert node["metadata"]["labels"]["kaito.sh/machine"] == name
            assert not any(t["key"] == STARTUP["key"] for t in node["spec"].get("taints") or [])
            assert karpenter.created.count(name) == 1, "one NodeClaim per Machine"

            # A failed launch comes back as a typed condition; the failed NodeClaim is replaced.
            await client.create(machine_manifest(f"ice-{run}", run, instance_type="Standard_NC24s_v3"))

            async def capacity() -> bool:
                cond = condition(await client.get_or_none(MACHINE, f"ice-{run}"), "Launched")
                return cond.get("reason") == "InsufficientCapacity"

            await eventually(capacity, 30, message="InsufficientCapacity from Karpenter")
            message = condition(await client.get(MACHINE, f"ice-{run}"), "Launched")["message"]
            assert f"Karpenter could not launch NodeClaim ice-{run}" in message, message
            await eventually(lambda: karpenter.created.count(f"ice-{run}") >= 2, 30, message="a fresh NodeClaim")

            # Deleting the Machine deletes the NodeClaim; Karpenter's finalizer takes the node with it.
            await client.delete(MACHINE, name)

            async def gone() -> bool:
                return (await client.get_or_none(MACHINE, name) is None
                        and await client.get_or_none(NODECLAIM, name) is None
                        and await client.get_or_none(NODE, f"karpenter-{name}") is None)

            await eventually(gone, 30, message="Machine, NodeClaim and Node gone")
            await cleanup_machines(client, run)
            assert await client.get_or_none(NODECLAIM, f"ice-{run}") is None
        finally:
            fake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fake
