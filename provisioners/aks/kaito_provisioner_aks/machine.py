"""Read what the provisioner needs from a Machine: the kaito_core.api model, or a plain dict.

Machine (group ``kaito.sh``, v1alpha1) is shaped after Karpenter's NodeClaim. This
module is the one place that knows its field names, so a change of the model is
a change here. A pydantic model is dumped by alias (the JSON/Kubernetes
spelling: ``instanceType``, ``nodeLabels``...) and read like the dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kaito_core.api import ANNOTATION_NODE_IMAGE_FAMILY, LABEL_INSTANCE_TYPE
from kaito_core.provisioning import NodeRef, parse_quantity

__all__ = [
    "IMAGE_FAMILY_ANNOTATION",
    "OS_DISK_ANNOTATION",
    "MachineView",
    "parse_quantity_gib",
    "view_machine",
]

#: The Workspace annotation the Machine carries (one home: kaito_core.api).
IMAGE_FAMILY_ANNOTATION = ANNOTATION_NODE_IMAGE_FAMILY
OS_DISK_ANNOTATION = "kaito.sh/node-os-disk-size-gb"
INSTANCE_TYPE_LABEL = LABEL_INSTANCE_TYPE


@dataclass(frozen=True)
class MachineView:
    """The Machine fields the AKS provisioner reads."""

    name: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    instance_type: str | None = None
    requirements: list[Mapping[str, Any]] = field(default_factory=list)
    taints: list[Mapping[str, Any]] = field(default_factory=list)
    startup_taints: list[Mapping[str, Any]] = field(default_factory=list)
    requests: Mapping[str, str] = field(default_factory=dict)
    node_labels: Mapping[str, str] = field(default_factory=dict)
    provider_id: str | None = None

    def instance_types(self) -> list[str]:
        """``spec.instanceType``, else the values of an ``In`` requirement on the instance-type label."""
        if self.instance_type:
            return [self.instance_type]
        for req in self.requirements:
            if req.get("key") == INSTANCE_TYPE_LABEL and req.get("operator", "In") == "In":
                return [str(v) for v in req.get("values") or []]
        return []


def _as_dict(machine: Any) -> Mapping[str, Any]:
    if isinstance(machine, Mapping):
        return machine
    dump = getattr(machine, "model_dump", None)
    if callable(dump):
        data = dump(by_alias=True, mode="json", exclude_none=True)
        if isinstance(data, Mapping):
            return data
    raise TypeError(f"cannot read a Machine from {type(machine).__name__}: expected a dict or a pydantic model")


def _get(data: Mapping[str, Any], *keys: str) -> Any:
    """The first key present (camelCase spelling first, snake_case as a fallback)."""
    for key in keys:
        if key in data and data[key] is not None:
            return data[key]
    return None


def view_machine(machine: Any) -> MachineView:
    """A :class:`MachineView` of a Machine model, a Machine dict, or a NodeRef a collector hands us."""
    if isinstance(machine, NodeRef):
        if not machine.machine_name:
            raise ValueError(f"node {machine.provider_id!r} records no Machine name; cannot derive its pool")
        return MachineView(name=machine.machine_name)
    data = _as_dict(machine)
    meta: Mapping[str, Any] = _get(data, "metadata") or {}
    spec: Mapping[str, Any] = _get(data, "spec") or {}
    status: Mapping[str, Any] = _get(data, "status") or {}
    resources: Mapping[str, Any] = _get(spec, "resources") or {}
    requests: Mapping[str, Any] = _get(resources, "requests") or {}
    return MachineView(
        name=str(_get(meta, "name") or ""),
        namespace=_get(meta, "namespace"),
        labels=dict(_get(meta, "labels") or {}),
        annotations=dict(_get(meta, "annotations") or {}),
        instance_type=_get(spec, "instanceType", "instance_type"),
        requirements=list(_get(spec, "requirements") or []),
        taints=list(_get(spec, "taints") or []),
        startup_taints=list(_get(spec, "startupTaints", "startup_taints") or []),
        requests={str(k): str(v) for k, v in requests.items()},
        node_labels=dict(_get(spec, "nodeLabels", "node_labels") or {}),
        provider_id=_get(status, "providerID", "providerId", "provider_id"),
    )


def parse_quantity_gib(quantity: str) -> int:
    """A Kubernetes quantity (``128Gi``, ``100G``, ``137438953472``) in whole GiB, rounded up
    (kaito-core's quantity parser, the catalog's)."""
    return max(1, -(-parse_quantity(quantity) // 2**30))
