"""The ``realnode`` provisioner's shapes, without starting a node: what a Machine's node would carry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from kaito_core.api.machine import Machine
from kaito_core.provisioning.protocol import InstanceTypeUnavailableError, Provisioner
from kaito_core.provisioning.realnode import RealNodeProvisioner
from kaito_core.testing.realnode import RealNodes

pytestmark = pytest.mark.realnode  # RealNodes wants root

STARTUP = {"key": "nvidia.com/gpu-driver", "value": "installing", "effect": "NoSchedule"}
SKU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}


def machine(instance_type: str = "Standard_NC12s_v3") -> Machine:
    return Machine.from_dict({
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Machine",
        "metadata": {"name": "ws1234-0", "labels": {"kaito.sh/workspace": "ws", "kaito.sh/workspacenamespace": "n"}},
        "spec": {"instanceType": instance_type, "nodeLabels": {"apps": "phi-3"}, "taints": [SKU_TAINT],
                 "startupTaints": [STARTUP], "resources": {"requests": {"nvidia.com/gpu": "2"}}},
    })


def handle(tmp_path: Path) -> RealNodes:
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
                  "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443",
                                                         "certificate-authority": "/ca.crt"}}],
                  "users": [{"name": "u", "user": {"client-certificate": "/u.crt", "client-key": "/u.key"}}],
                  "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    return RealNodes(tmp_path / "kubeconfig")


def test_a_machine_becomes_a_node_spec_with_its_labels_taints_and_gpus(tmp_path: Path) -> None:
    provisioner = RealNodeProvisioner(nodes=handle(tmp_path))
    assert isinstance(provisioner, Provisioner)
    spec = provisioner.node_spec(machine())
    assert spec.name == "ws1234-0"
    assert spec.labels["kaito.sh/machine"] == "ws1234-0"
    assert spec.labels["kaito.sh/provisioner"] == "realnode"
    assert spec.labels["kaito.sh/workspace"] == "ws" and spec.labels["apps"] == "phi-3"
    assert spec.labels["node.kubernetes.io/instance-type"] == "Standard_NC12s_v3"
    assert list(spec.taints) == [SKU_TAINT, STARTUP]
    assert spec.extended_resources == {"nvidia.com/gpu": "2"}  # the SKU catalog's count
    with pytest.raises(InstanceTypeUnavailableError):
        provisioner.node_spec(machine("Standard_Nope"))
    assert asyncio.run(provisioner.get(machine())) is None
    assert asyncio.run(provisioner.list()) == []
    asyncio.run(provisioner.delete(machine()))  # nothing there: success
