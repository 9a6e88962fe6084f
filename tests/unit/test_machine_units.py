"""Pure parts of the Machine controller and the built-in provisioners (no control plane)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from pydantic import BaseModel

from kaito_core.api import Condition, Machine, MachineReason, machine_ready
from kaito_core.controllers.machine import MachineControllerSettings, machine_for_ref
from kaito_core.controllers.machine.initialization import node_health
from kaito_core.controllers.machine.watches import not_status_only
from kaito_core.provisioning import (
    BYOSettings,
    NodeCheck,
    NodeRef,
    Provisioner,
    SimulatedProvisioner,
    SimulatedSettings,
    load_provisioner,
    node_labels_for,
    node_problem,
    node_taints_for,
    parse_count,
    requirement_problem,
)
from kaito_core.testing import gpu_node_manifest


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


def _conditions(**types: tuple[str, str, str]) -> list[Condition]:
    return [Condition(type=t, status=s, reason=r, message=m) for t, (s, r, m) in types.items()]


def test_ready_is_computed_from_launched_registered_initialized() -> None:
    true = ("True", "x", "")
    assert machine_ready(_conditions(Launched=true, Registered=true, Initialized=true), node_name="n") == (
        "True", MachineReason.READY, "Node n is Ready")
    # The first False says why; waiting is NotReady with the step it waits for.
    failed = _conditions(Launched=("False", "QuotaExceeded", "no quota"))
    assert machine_ready(failed) == ("False", "QuotaExceeded", "no quota")
    launching = _conditions(Launched=("Unknown", "Launching", "launching"))
    assert machine_ready(launching) == ("False", MachineReason.NOT_READY, "waiting for the node to launch")
    registering = _conditions(Launched=true, Registered=("Unknown", "NodeNotFound", "waiting"))
    assert machine_ready(registering)[2] == "waiting for the node to register"
    # A failed attempt's timeout stays on Ready while the next attempt merely waits...
    recycled = _conditions(Launched=true, Registered=("Unknown", "NodeNotFound", "waiting"),
                           Ready=("False", "LaunchTimeout", "attempt 1: too slow"))
    assert machine_ready(recycled) == ("False", "LaunchTimeout", "attempt 1: too slow")
    # ... and what blocks the Machine beyond them (deleting, its Node not Ready) wins.
    assert machine_ready(recycled, blocked=("Deleting", "deleting the node")) == (
        "False", "Deleting", "deleting the node")
    assert MachineReason.of("QuotaExceeded") is MachineReason.QUOTA_EXCEEDED
    assert MachineReason.of("SomePluginReason") is None and MachineReason.of(None) is None


def test_one_check_for_gpu_nodes() -> None:
    def node(**changes: Any) -> dict[str, Any]:
        obj = gpu_node_manifest("n", gpus=2)
        obj["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        for path, value in changes.items():
            section, key = path.split("__")
            obj[section][key] = value
        return obj

    assert node_problem(node()) is None and node_problem(node(), gpus=2) is None
    assert str(node_problem(node(), gpus=3)) == "2 allocatable nvidia.com/gpu, needs 3"
    assert node_problem(node(spec__unschedulable=True)).check is NodeCheck.CORDONED  # type: ignore[union-attr]
    assert node_problem(node(metadata__deletionTimestamp="now")).check is NodeCheck.DELETING  # type: ignore[union-attr]
    not_ready = node(status__conditions=[{"type": "Ready", "status": "False"}])
    assert str(node_problem(not_ready)) == "not Ready"
    tainted = node(spec__taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}])
    assert str(node_problem(tainted)) == "still carries node.kubernetes.io/not-ready:NoSchedule"
    assert node_problem(tainted, settled=False) is None
    # The Machine's words for the same findings.
    health = node_health(not_ready, 1)
    assert health is not None and health[1:] == ("NodeNotReady", "Node n is not Ready")
    health = node_health(node(), 4)
    assert health is not None and health[1] == "GPUsNotAllocatable" and "the Machine needs 4" in health[2]
    assert node_health(node(), None) is None
