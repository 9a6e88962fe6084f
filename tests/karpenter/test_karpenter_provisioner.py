"""The karpenter provisioner: NodeClaims made to Kaito's measure (no cluster needed).

The round trips through the real Karpenter are in test_real_karpenter.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from kaito_provisioner_karpenter import KarpenterProvisioner, KarpenterSettings, node_pool_name
from machine_support import machine_manifest

from kaito_core.api import Machine
from kaito_core.provisioning import InstanceTypeUnavailableError, InsufficientCapacityError, ProvisionerContext

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


def _nodeclaim(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "falcon-0"}, "status": status}


async def test_launch_failures_as_real_karpenter_reports_them() -> None:
    plugin = KarpenterProvisioner(KarpenterSettings(node_class_kind="KWOKNodeClass"))
    waiting = {"type": "Launched", "status": "Unknown", "reason": "AwaitingReconciliation",
               "message": "object is awaiting reconciliation"}
    failed = {"type": "Launched", "status": "Unknown", "reason": "LaunchFailed",
              "message": "launching nodeclaim, instance type not found (instance-type=Standard_NC24s_v3)"}

    class Client:
        def __init__(self, nodeclaim: dict[str, Any] | None):
            self.nodeclaim, self.deleted = nodeclaim, False

        async def get_or_none(self, *args: Any) -> dict[str, Any] | None:
            return self.nodeclaim

        async def create(self, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            self.nodeclaim = {**body, "metadata": {**body["metadata"], "uid": "u-2"}}
            return self.nodeclaim

        async def delete(self, *args: Any, **kwargs: Any) -> None:
            self.deleted, self.nodeclaim = True, None

    machine = _machine()
    labels = plugin.nodeclaim_for(machine)["metadata"]["labels"]
    # Karpenter's initial Unknown is waiting, not failing.
    client = Client({**_nodeclaim({"conditions": [waiting]}), "metadata": {"name": "falcon-0", "labels": labels}})
    plugin._client = client  # type: ignore[assignment]
    ref = await plugin.create(machine)
    assert not ref.provider_id and not client.deleted and "Launched=Unknown" in ref.message
    # Unknown/LaunchFailed (Karpenter never writes False) is a failure: typed, and the NodeClaim goes.
    client.nodeclaim = {**_nodeclaim({"conditions": [failed]}), "metadata": {"name": "falcon-0", "labels": labels}}
    with pytest.raises(InstanceTypeUnavailableError, match="instance type not found"):
        await plugin.create(machine)
    assert client.deleted
    # A NodeClaim this plugin made that vanishes before launch was deleted by Karpenter: no capacity.
    await plugin.create(machine)  # a fresh one, not launched yet
    client.nodeclaim = None
    with pytest.raises(InsufficientCapacityError, match="Karpenter deleted NodeClaim falcon-0 before it launched"):
        await plugin.create(machine)
    ref = await plugin.create(machine)  # and then asks again
    assert client.nodeclaim is not None and not ref.provider_id
    # Launched but not yet Registered by Karpenter: its Node is not finished, so no providerID yet.
    launched = {"type": "Launched", "status": "True", "reason": "Launched", "message": ""}
    unregistered = {"type": "Registered", "status": "Unknown", "reason": "NodeNotFound", "message": ""}
    client.nodeclaim["status"] = {"providerID": "kwok://n1", "nodeName": "n1", "conditions": [launched, unregistered]}
    ref = await plugin.create(machine)
    assert not ref.provider_id and "Launched=True, Registered=Unknown" in ref.message
    client.nodeclaim["status"]["conditions"] = [launched, {**unregistered, "status": "True", "reason": "Registered"}]
    ref = await plugin.create(machine)
    assert ref.provider_id == "kwok://n1" and ref.node_name == "n1"


def test_instance_types_come_from_the_sku_catalog() -> None:
    from kaito_core.testing.karpenter import instance_types_from_catalog, kwok_node_class

    (nc6,) = instance_types_from_catalog(["Standard_NC6s_v3"])
    assert nc6["name"] == "Standard_NC6s_v3" and nc6["operatingSystems"] == ["linux"]
    assert nc6["resources"] == {"cpu": "6", "memory": "114688Mi", "nvidia.com/gpu": "1"}
    assert nc6["offerings"][0]["Available"] is True
    everything = {t["name"] for t in instance_types_from_catalog()}
    assert {"Standard_NC6s_v3", "Standard_NC12s_v3"} <= everything
    with pytest.raises(KeyError, match="'Standard_Nope' is not in the GPU SKU catalog"):
        instance_types_from_catalog(["Standard_Nope"])
    assert kwok_node_class("slow", registration_delay="3s")["spec"] == {"nodeRegistrationDelay": "3s"}


def test_karpenter_is_cached_by_its_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from kaito_core.testing import build

    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path))
    assert build.karpenter_dir() == tmp_path / "bin" / "karpenter-v1.14.1"
    binary = build.karpenter_dir() / "karpenter-kwok"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no Go: a cached binary needs none
    assert build.ensure_karpenter() == binary


def test_a_node_pool_per_workspace_as_kaito_names_it() -> None:
    plugin = KarpenterProvisioner(KarpenterSettings(node_class_kind="KWOKNodeClass", node_pool_per_workspace=True))
    machine = _machine()  # Workspace ws in namespace default
    assert plugin.nodeclaim_for(machine)["metadata"]["labels"]["karpenter.sh/nodepool"] == "default-ws"
    pool = plugin.nodepool_for(machine)
    assert pool is not None and pool["metadata"]["name"] == "default-ws"
    spec = pool["spec"]
    # Karpenter must neither add nodes to it for pending pods nor consolidate an empty GPU node.
    assert spec["limits"] == {"nodes": "0"} and spec["disruption"]["budgets"] == [{"nodes": "0"}]
    assert spec["disruption"]["consolidateAfter"] == "Never"
    assert spec["template"]["spec"]["nodeClassRef"]["kind"] == "KWOKNodeClass"
    assert spec["template"]["spec"]["requirements"] == [
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC12s_v3"]}]
    assert spec["template"]["metadata"]["labels"]["kaito.sh/workspace"] == "ws"
    long = node_pool_name("n" * 63, "w" * 200)
    assert len(long) == 253 and long == node_pool_name("n" * 63, "w" * 200) != node_pool_name("n" * 63, "w" * 201)
    # Off (the default): the shared node_pool, and no NodePool is made.
    shared = KarpenterProvisioner(KarpenterSettings(node_class_kind="KWOKNodeClass"))
    assert shared.nodepool_for(machine) is None
    assert shared.nodeclaim_for(machine)["metadata"]["labels"]["karpenter.sh/nodepool"] == "kaito"
