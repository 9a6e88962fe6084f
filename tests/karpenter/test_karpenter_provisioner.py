"""The karpenter provisioner: NodeClaims made to Kaito's measure (no cluster needed).

The round trips through the real Karpenter are in test_real_karpenter.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from kaito_provisioner_karpenter import KarpenterProvisioner, KarpenterSettings
from machine_support import machine_manifest

from kaito_core.api import Machine
from kaito_core.provisioning import ProvisionerContext

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
