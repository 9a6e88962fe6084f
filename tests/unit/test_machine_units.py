"""Pure parts of the Machine controller and the built-in provisioners (no control plane)."""

from __future__ import annotations

import importlib

import pytest
from pydantic import BaseModel

from kaito_core.api import Machine
from kaito_core.controllers.machine import MachineControllerSettings, machine_for_ref
from kaito_core.controllers.machine.reconciler import not_status_only
from kaito_core.provisioning import (
    BYOSettings,
    NodeRef,
    Provisioner,
    SimulatedProvisioner,
    SimulatedSettings,
    load_provisioner,
    node_labels_for,
    node_taints_for,
    parse_count,
    requirement_problem,
)


def _machine() -> Machine:
    return Machine.from_dict({
        "metadata": {"name": "ws-0", "labels": {"kaito.sh/workspace": "ws", "kaito.sh/workspacenamespace": "ns",
                                                "unrelated": "x"}},
        "spec": {"instanceType": "Standard_NC24s_v3", "nodeLabels": {"team": "a"},
                 "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
                 "startupTaints": [{"key": "driver", "effect": "NoSchedule"},
                                   {"key": "sku", "value": "gpu", "effect": "NoSchedule"}]},
    })


@pytest.mark.parametrize("module", ["kaito_core.provisioning", "kaito_core.controllers.machine",
                                    "kaito_provisioner_karpenter"])
def test_public_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    assert len(set(mod.__all__)) == len(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"


@pytest.mark.parametrize("model", [MachineControllerSettings, SimulatedSettings, BYOSettings])
def test_every_setting_is_documented(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no docstring"


def test_builtins_satisfy_the_protocol() -> None:
    for name in ("simulated", "byo"):
        assert isinstance(load_provisioner(name), Provisioner)


def test_labels_and_taints_for_a_machine() -> None:
    machine = _machine()
    labels = node_labels_for(machine, "simulated")
    assert labels == {"kaito.sh/machine": "ws-0", "kaito.sh/machine-type": "gpu", "kaito.sh/workspace": "ws",
                      "kaito.sh/workspacenamespace": "ns", "node.kubernetes.io/instance-type": "Standard_NC24s_v3",
                      "kaito.sh/provisioner": "simulated", "team": "a"}
    assert node_taints_for(machine, startup=False) == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert node_taints_for(machine) == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"},
                                        {"key": "driver", "effect": "NoSchedule"}]


def test_simulated_node_capacity_comes_from_the_catalog() -> None:
    machine = _machine()
    provisioner = SimulatedProvisioner()
    node = provisioner.node_manifest(machine, provisioner._sku(machine))
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
    assert node["status"]["capacity"]["cpu"] == "24"
    assert node["spec"]["providerID"] == "kwok://ws-0"
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}


def test_requirements_and_counts() -> None:
    labels = {"zone": "1", "gen": "5"}
    assert requirement_problem(labels, {"key": "zone", "operator": "In", "values": ["1", "2"]}) is None
    assert "not one of" in (requirement_problem(labels, {"key": "zone", "operator": "In", "values": ["3"]}) or "")
    assert requirement_problem(labels, {"key": "gen", "operator": "Gt", "values": ["4"]}) is None
    assert requirement_problem(labels, {"key": "gen", "operator": "Lt", "values": ["4"]})
    assert requirement_problem(labels, {"key": "x", "operator": "DoesNotExist"}) is None
    assert requirement_problem(labels, {"key": "x", "operator": "Exists"})
    assert [parse_count(v) for v in ("2", 3, "1k", "", "abc", True)] == [2, 3, 1000, 0, 0, 0]


def test_status_only_updates_are_filtered() -> None:
    old = {"metadata": {"generation": 1, "labels": {"a": "1"}, "resourceVersion": "1"}, "status": {"x": 1}}
    assert not not_status_only.update(old, {**old, "status": {"x": 2}, "metadata": {**old["metadata"],
                                                                                    "resourceVersion": "2"}})
    assert not_status_only.update(old, {**old, "metadata": {**old["metadata"], "deletionTimestamp": "now"}})
    assert not_status_only.update(old, {**old, "metadata": {**old["metadata"], "annotations": {"b": "2"}}})


def test_stand_in_machine_for_a_leaked_node() -> None:
    ref = NodeRef(provider_id="kwok://x", instance_type="Standard_NC6s_v3", labels={"kaito.sh/machine": "gone"})
    machine = machine_for_ref(ref, "gone")
    assert machine.name == "gone" and machine.spec.instance_type == "Standard_NC6s_v3"
    assert SimulatedProvisioner().node_name(machine) == "gone"
