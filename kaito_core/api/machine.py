"""The Machine: one GPU node being provisioned, shaped after Karpenter's Machine/NodeClaim.

Cluster-scoped (like Karpenter's), ``kaito.sh/v1alpha1``. The Workspace reconciler
creates one per missing node, with deterministic names and the labels
``kaito.sh/workspace`` / ``kaito.sh/workspacenamespace`` pointing back at its
Workspace, and the finalizer :data:`~kaito_core.api.constants.MACHINE_FINALIZER`
so the Machine reconciler can tear the instance down before the object goes.

The spec is immutable (CEL ``self == oldSelf``): to change a node, replace its Machine.
The status follows the NodeClaim lifecycle: Launched (the provisioner created the
instance: ``providerID``) -> Registered (a Node joined: ``nodeName``) -> Initialized
(Node Ready, GPUs allocatable) -> Ready.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema
from pydantic.config import JsonDict

from kaito_core.api.common import Condition, KubeModel, ObjectMeta
from kaito_core.api.constants import (
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    MACHINE_API_VERSION,
    MACHINE_KIND,
)

__all__ = [
    "Machine",
    "MachineResources",
    "MachineSpec",
    "MachineStatus",
    "NodeSelectorRequirement",
    "Quantity",
    "Taint",
]


def _quantity(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


#: A Kubernetes quantity ("1", "16Gi", 2): kept as a string in Python, int-or-string in the CRD.
Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}),
]

_MAX_ITEMS = 100  # bounds the cost of the spec-immutability CEL rule
# String bounds in the CRD (the same cost, and no megabyte strings): names, label keys, label values.
_NAME: JsonDict = {"maxLength": 253}
_LABEL_KEY: JsonDict = {"maxLength": 317}
_LABEL_VALUE: JsonDict = {"type": "string", "maxLength": 63}


class NodeSelectorRequirement(KubeModel):
    key: str = Field(json_schema_extra=_LABEL_KEY)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] | None = Field(default=None, json_schema_extra={"maxItems": _MAX_ITEMS, "items": _LABEL_VALUE})


class Taint(KubeModel):
    key: str = Field(json_schema_extra=_LABEL_KEY)
    value: str | None = Field(default=None, json_schema_extra={"maxLength": 63})
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class MachineResources(KubeModel):
    requests: dict[str, Quantity] | None = Field(
        default=None, description="Minimum resources the node must have, e.g. nvidia.com/gpu and storage.",
        json_schema_extra={"maxProperties": _MAX_ITEMS})


class MachineSpec(KubeModel):
    """What node to make. Immutable."""

    instance_type: str = Field(description="Instance type (VM size) to launch, e.g. Standard_NC6s_v3.",
                               json_schema_extra=_NAME)
    requirements: list[NodeSelectorRequirement] | None = Field(
        default=None, description="Node selector requirements the node must satisfy (zones, capacity type, ...).",
        json_schema_extra={"maxItems": _MAX_ITEMS})
    taints: list[Taint] | None = Field(
        default=None, description="Taints the node is created with (GPU nodes carry sku=gpu:NoSchedule).",
        json_schema_extra={"maxItems": _MAX_ITEMS})
    startup_taints: list[Taint] | None = Field(
        default=None, description="Taints expected to be removed by node setup (e.g. the GPU driver).",
        json_schema_extra={"maxItems": _MAX_ITEMS})
    resources: MachineResources | None = None
    node_labels: dict[str, str] | None = Field(
        default=None, description="Labels the node is created with.",
        json_schema_extra={"maxProperties": _MAX_ITEMS, "additionalProperties": _LABEL_VALUE})
    provisioner: str | None = Field(
        default=None, description="Name of the provisioner plugin that makes the node (e.g. azure-aks).",
        json_schema_extra=_NAME)


class MachineStatus(KubeModel):
    provider_id: str | None = Field(default=None, alias="providerID", description="The cloud's id of the instance.")
    node_name: str | None = Field(default=None, description="The Node that registered for this Machine.")
    capacity: dict[str, Quantity] | None = None
    allocatable: dict[str, Quantity] | None = None
    conditions: list[Condition] | None = Field(
        default=None, description="Launched, Registered, Initialized, Ready.")


class Machine(KubeModel):
    """One GPU node being provisioned for a Workspace (cluster-scoped)."""

    api_version: str = Field(default=MACHINE_API_VERSION, alias="apiVersion")
    kind: str = MACHINE_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: MachineSpec = Field(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self == oldSelf",
         "message": "a Machine's spec is immutable; delete the Machine and create a new one"},
    ]})
    status: MachineStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def workspace(self) -> tuple[str, str] | None:
        """(namespace, name) of the Workspace this Machine belongs to, from its labels."""
        labels = self.metadata.labels or {}
        if LABEL_WORKSPACE in labels and LABEL_WORKSPACE_NAMESPACE in labels:
            return labels[LABEL_WORKSPACE_NAMESPACE], labels[LABEL_WORKSPACE]
        return None
