"""Workspace and Machine models: the seed examples round-trip, both versions parse, helpers behave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kaito_core import api
from kaito_core.api import (
    GPU_TAINT,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    Condition,
    Machine,
    Workspace,
    WorkspaceConditionType,
    WorkspaceV1Alpha1,
    get_condition,
    is_condition_true,
    set_condition,
)

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def test_there_are_three_seed_examples() -> None:
    assert len(EXAMPLES) == 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_seed_example_round_trips(path: Path) -> None:
    doc = _load(path)
    ws = Workspace.from_dict(doc)
    assert ws.to_dict(exclude_unset=True) == doc
    assert ws.version == "v1alpha1"
    assert ws.resource.instance_type == "Standard_NC6s_v3"
    assert ws.resource.count == 1  # the default
    again = Workspace.from_dict(ws.to_dict())
    assert again == ws


def test_adapter_strength_stays_a_string() -> None:
    ws = Workspace.from_dict(_load(next(p for p in EXAMPLES if "adapters" in p.name)))
    assert ws.inference is not None and ws.inference.adapters is not None
    assert ws.inference.adapters[0].strength == "1.0"
    assert ws.preset is not None and ws.preset.name == "phi-3-mini-128k-instruct"
    assert ws.is_inference and not ws.is_tuning


def test_tuning_example_fields() -> None:
    ws = Workspace.from_dict(_load(next(p for p in EXAMPLES if "tuning" in p.name)))
    assert ws.tuning is not None and ws.tuning.method == "qlora"
    assert ws.tuning.output is not None and ws.tuning.output.image_push_secret == "ACR_REGISTRY_SECRET_HERE"
    assert ws.preset is not None and ws.preset.name == "phi-3-mini-128k-instruct"
    assert set(ws.spec_dict()) == {"resource", "tuning"}


def test_versions_and_snake_case_names() -> None:
    ws = Workspace(resource={"instance_type": "g5.xlarge", "label_selector": {"match_labels": {"a": "b"}}},
                   inference={"preset": {"name": "phi-4"}})
    assert ws.api_version == "kaito.sh/v1beta1"
    assert ws.to_dict()["resource"] == {"count": 1, "instanceType": "g5.xlarge",
                                        "labelSelector": {"matchLabels": {"a": "b"}}}
    old = WorkspaceV1Alpha1.from_dict(ws.to_dict() | {"apiVersion": "kaito.sh/v1alpha1"})
    assert old.version == "v1alpha1"
    assert WorkspaceV1Alpha1(resource=ws.resource, inference=ws.inference).api_version == "kaito.sh/v1alpha1"


def test_unknown_fields_and_embedded_kubernetes_types_are_kept() -> None:
    template = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    doc = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "w", "uid": "u"},
           "resource": {"labelSelector": {}, "futureField": 1}, "inference": {"template": template}}
    ws = Workspace.from_dict(doc)
    assert ws.to_dict(exclude_unset=True) == doc


def test_missing_resource_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        Workspace.from_dict({"inference": {"preset": {"name": "phi-4"}}})


def test_machine_round_trip_and_workspace_labels() -> None:
    doc: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Machine",
        "metadata": {"name": "ws-abc", "labels": {LABEL_WORKSPACE: "w", LABEL_WORKSPACE_NAMESPACE: "ns"},
                     "finalizers": [api.MACHINE_FINALIZER]},
        "spec": {"instanceType": "Standard_NC6s_v3", "taints": [GPU_TAINT],
                 "resources": {"requests": {api.GPU_RESOURCE: "1", "storage": "70Gi"}},
                 "requirements": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}],
                 "nodeLabels": {"apps": "phi-3"}, "provisioner": "azure-aks"},
        "status": {"providerID": "azure:///x", "nodeName": "n1", "capacity": {api.GPU_RESOURCE: "1"},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    }
    machine = Machine.from_dict(doc)
    assert machine.to_dict(exclude_unset=True) == doc
    assert machine.status is not None and machine.status.provider_id == "azure:///x"
    assert machine.workspace == ("ns", "w")
    assert Machine.from_dict(doc | {"spec": doc["spec"] | {"resources": {"requests": {"nvidia.com/gpu": 2}}}}
                             ).spec.resources.requests == {"nvidia.com/gpu": "2"}  # type: ignore[union-attr]


def test_set_condition_keeps_transition_time_when_status_is_unchanged() -> None:
    ready = WorkspaceConditionType.WORKSPACE_READY
    first = set_condition(None, ready, "False", "Pending", "waiting for nodes", now="2026-01-01T00:00:00Z")
    second = set_condition(first, ready, "False", "Pending", "still waiting", now="2026-01-01T00:05:00Z")
    assert second[0].last_transition_time == "2026-01-01T00:00:00Z" and second[0].message == "still waiting"
    third = set_condition(second, ready, "True", "Ready", "serving", now="2026-01-01T00:09:00Z",
                          observed_generation=2)
    assert third[0].last_transition_time == "2026-01-01T00:09:00Z" and is_condition_true(third, ready)
    same = set_condition(third, ready, "True", "Ready", "serving", now="2026-01-01T00:10:00Z",
                         observed_generation=2)
    assert same == third
    other = set_condition(third, "ResourceReady", "True", "NodesReady", "1/1 nodes ready")
    assert [c.type for c in other] == [ready, "ResourceReady"] and first == [first[0]]
    assert get_condition(other, "Missing") is None
    assert isinstance(other[1], Condition)


def test_condition_type_names() -> None:
    assert api.WORKSPACE_CONDITION_TYPES == (
        "ResourceReady", "InferenceReady", "JobStarted", "WorkspaceSucceeded", "WorkspaceReady")
    assert api.MACHINE_CONDITION_TYPES == ("Launched", "Registered", "Initialized", "Ready")


def test_public_names_are_pinned() -> None:
    assert sorted(api.__all__) == sorted(set(api.__all__))
    for name in api.__all__:
        assert hasattr(api, name), name
    expected = {
        "GROUP": "kaito.sh", "WORKSPACE_FINALIZER": "workspace.finalizer.kaito.sh",
        "MACHINE_FINALIZER": "machine.finalizer.kaito.sh", "ANNOTATION_RUNTIME": "kaito.sh/runtime",
        "ANNOTATION_ENABLE_LB": "kaito.sh/enablelb", "ANNOTATION_REVISION": "kaito.sh/revision",
        "ANNOTATION_NODE_IMAGE_FAMILY": "kaito.sh/node-image-family", "GPU_RESOURCE": "nvidia.com/gpu",
        "LABEL_WORKSPACE": "kaito.sh/workspace", "LABEL_WORKSPACE_NAMESPACE": "kaito.sh/workspacenamespace",
        "WORKSPACE_PLURAL": "workspaces", "MACHINE_PLURAL": "machines", "STORAGE_VERSION": "v1beta1",
        "WORKSPACE_VERSIONS": ("v1alpha1", "v1beta1"), "MACHINE_VERSION": "v1alpha1",
    }
    for name, value in expected.items():
        assert getattr(api, name) == value, name
    assert api.GPU_TAINT == {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
