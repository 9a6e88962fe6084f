"""Nodes for a Workspace: how many, which existing ones, which Machines to create or delete.

Pure functions over cached objects (plain dicts), so every decision is unit-tested.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito_presets import GpuSku, ModelPreset

from kaito_core.api import (
    ANNOTATION_NODE_IMAGE_FAMILY,
    GPU_RESOURCE,
    GPU_TAINT,
    LABEL_INSTANCE_TYPE,
    LABEL_MACHINE_TYPE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    MACHINE_API_VERSION,
    MACHINE_FINALIZER,
    MACHINE_KIND,
    Workspace,
    WorkspaceReason,
)
from kaito_core.controllers.workspace.naming import machine_name, machine_slot
from kaito_core.provisioning.nodes import ephemeral_taints
from kaito_core.provisioning.nodes import node_is_ready as node_condition_ready

__all__ = [
    "NodePlan",
    "ResourceState",
    "machine_manifest",
    "machine_node_name",
    "matches_selector",
    "node_gpus",
    "node_is_ready",
    "node_labels_for",
    "plan_nodes",
    "qualified_nodes",
    "required_node_count",
    "resource_state",
    "workspace_labels",
]

#: Machine condition reasons that mean "this will not come up by waiting"; surfaced in ResourceReady.
_MACHINE_FAILURES = {
    "InsufficientCapacity": WorkspaceReason.INSUFFICIENT_CAPACITY,
    "QuotaExceeded": WorkspaceReason.QUOTA_EXCEEDED,
    "InstanceTypeUnavailable": WorkspaceReason.INSTANCE_TYPE_UNAVAILABLE,
    "LaunchFailed": WorkspaceReason.PROVISIONING_FAILED,
}


def workspace_labels(ws: Workspace) -> dict[str, str]:
    """The two labels pointing back at a Workspace (on Machines, their nodes and the workloads)."""
    return {LABEL_WORKSPACE: ws.name, LABEL_WORKSPACE_NAMESPACE: ws.namespace}


def required_node_count(ws: Workspace, preset: ModelPreset | None, sku: GpuSku | None) -> int:
    """``resource.count``, or as many nodes as the preset's GPU memory needs on this SKU if more."""
    count = ws.resource.count
    if preset is None or sku is None or ws.tuning is not None:
        return count
    by_memory = math.ceil(preset.inference.gpu_memory / sku.gpu_memory)
    by_gpus = math.ceil(preset.inference.gpu_count / sku.gpu_count)
    return max(count, by_memory, by_gpus)


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def matches_selector(labels: Mapping[str, str], selector: Mapping[str, Any] | None) -> bool:
    """A metav1.LabelSelector (dict with matchLabels / matchExpressions) against labels."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or ())
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def node_labels_for(ws: Workspace) -> dict[str, str]:
    """Labels a node made for this Workspace carries: the selector's (satisfied), ours, the machine type."""
    selector = ws.resource.label_selector.to_dict()
    labels: dict[str, str] = dict(selector.get("matchLabels") or {})
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and values and key not in labels:
            labels[key] = values[0]
        elif op == "Exists" and key not in labels:
            labels[key] = "true"
    labels.update(workspace_labels(ws))
    labels[LABEL_MACHINE_TYPE] = "gpu"
    return labels


def node_is_ready(node: Mapping[str, Any]) -> bool:
    """Ready=True, schedulable, not going away, and clear of the taints Kubernetes puts on a node
    it does not trust yet (a pod sent there now would be Unschedulable)."""
    if (node.get("spec") or {}).get("unschedulable") or ephemeral_taints(node):
        return False
    if (node.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return node_condition_ready(node)


def node_gpus(node: Mapping[str, Any]) -> int:
    """GPUs the node reports (allocatable, else capacity); 0 until the device plugin is up."""
    status = node.get("status") or {}
    for section in ("allocatable", "capacity"):
        raw = (status.get(section) or {}).get(GPU_RESOURCE)
        if raw is not None:
            try:
                return int(str(raw))
            except ValueError:
                return 0
    return 0


def machine_node_name(machine: Mapping[str, Any]) -> str | None:
    name = (machine.get("status") or {}).get("nodeName")
    return str(name) if name else None


def _owner(node: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(workspace, namespace) a node was made for, from its ``kaito.sh/workspace*`` labels."""
    labels = _labels(node)
    return labels.get(LABEL_WORKSPACE), labels.get(LABEL_WORKSPACE_NAMESPACE)


def qualified_nodes(ws: Workspace, nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Existing Ready nodes this Workspace may use: they match ``labelSelector`` and either are in
    ``preferredNodes`` or carry the instance type; never a node made for another Workspace.
    Preferred nodes first, then by name."""
    selector = ws.resource.label_selector.to_dict()
    preferred = list(ws.resource.preferred_nodes or [])
    instance_type = (ws.resource.instance_type or "").lower()
    out: list[str] = []
    for node in nodes:
        labels = _labels(node)
        name = _name(node)
        if not node_is_ready(node) or not matches_selector(labels, selector):
            continue
        owner = _owner(node)
        if owner[0] is not None and owner != (ws.name, ws.namespace):
            continue
        if name in preferred or (instance_type and labels.get(LABEL_INSTANCE_TYPE, "").lower() == instance_type):
            out.append(name)
    return sorted(out, key=lambda n: (n not in preferred, preferred.index(n) if n in preferred else 0, n))


@dataclass
class NodePlan:
    """What to do about nodes this run, and which nodes the workload runs on."""

    required: int
    byo: list[str] = field(default_factory=list)
    """Existing nodes used (no Machine)."""
    machines: list[dict[str, Any]] = field(default_factory=list)
    """This Workspace's Machines that are kept, by slot."""
    create_slots: list[int] = field(default_factory=list)
    delete_machines: list[str] = field(default_factory=list)
    labelled: set[str] = field(default_factory=set)
    """Nodes (of :attr:`nodes`) that carry this Workspace's ``kaito.sh/workspace*`` labels."""

    @property
    def nodes(self) -> list[str]:
        """The nodes the workload goes on (Machines without a node yet are not listed)."""
        names = list(self.byo)
        for machine in self.machines:
            node = machine_node_name(machine)
            if node and node not in names:
                names.append(node)
        return sorted(names)


def _slot(ws: Workspace, machine: Mapping[str, Any]) -> int:
    slot = machine_slot(ws.namespace, ws.name, _name(machine))
    return slot if slot is not None else 1 << 30


def plan_nodes(ws: Workspace, required: int, machines: Sequence[Mapping[str, Any]],
               nodes: Iterable[Mapping[str, Any]]) -> NodePlan:
    """Keep the Machines we have (up to ``required``), fill up with qualified existing nodes,
    create Machines for the rest in the lowest free slots, delete Machines beyond ``required``.

    Slots are only ever taken from names the cache does not show, and a create of a name
    that exists answers AlreadyExists: a stale cache cannot double a Machine.
    """
    nodes = list(nodes)
    own = sorted((dict(m) for m in machines), key=lambda m: (_slot(ws, m), _name(m)))
    live = [m for m in own if not (m.get("metadata") or {}).get("deletionTimestamp")]
    keep, extra = live[:required], live[required:]
    machine_nodes = {machine_node_name(m) for m in own} - {None}
    candidates = [n for n in qualified_nodes(ws, nodes) if n not in machine_nodes]
    byo = candidates[:max(0, required - len(keep))]
    wanted = required - len(byo)
    used = {_slot(ws, m) for m in own}
    slots: list[int] = []
    slot = 0
    while len(keep) + len(slots) < wanted:
        if slot not in used:
            slots.append(slot)
        slot += 1
    plan = NodePlan(required=required, byo=byo, machines=keep, create_slots=slots,
                    delete_machines=[_name(m) for m in extra])
    chosen = set(plan.nodes)
    plan.labelled = {_name(n) for n in nodes if _name(n) in chosen and _owner(n) == (ws.name, ws.namespace)}
    return plan


def machine_manifest(ws: Workspace, slot: int, *, preset: ModelPreset | None, sku: GpuSku | None,
                     provisioner: str | None = None) -> dict[str, Any]:
    """The Machine for one slot: deterministic name, labels back to the Workspace, GPU taint."""
    labels = {**node_labels_for(ws)}
    instance_type = ws.resource.instance_type or ""
    requests: dict[str, str] = {}
    if sku is not None:
        requests[GPU_RESOURCE] = str(sku.gpu_count)
    elif preset is not None:
        requests[GPU_RESOURCE] = str(preset.inference.gpu_count)
    if preset is not None:
        requests["storage"] = f"{math.ceil(preset.inference.disk / 2**30)}Gi"
    spec: dict[str, Any] = {
        "instanceType": instance_type,
        "requirements": [{"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [instance_type]}],
        "taints": [dict(GPU_TAINT)],
        "nodeLabels": labels,
        "resources": {"requests": requests},
    }
    if provisioner:
        spec["provisioner"] = provisioner
    annotations = {}
    family = ws.annotations.get(ANNOTATION_NODE_IMAGE_FAMILY)
    if family:
        annotations[ANNOTATION_NODE_IMAGE_FAMILY] = family
    metadata: dict[str, Any] = {
        "name": machine_name(ws.namespace, ws.name, slot),
        "labels": labels,
        "finalizers": [MACHINE_FINALIZER],
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": MACHINE_API_VERSION, "kind": MACHINE_KIND, "metadata": metadata, "spec": spec}


@dataclass(frozen=True)
class ResourceState:
    ready: bool
    reason: str
    message: str


def _machine_failure(machine: Mapping[str, Any]) -> tuple[str, str] | None:
    for cond in (machine.get("status") or {}).get("conditions") or ():
        if cond.get("status") == "False" and cond.get("reason") in _MACHINE_FAILURES:
            return _MACHINE_FAILURES[cond["reason"]], str(cond.get("message") or cond["reason"])
    return None


def resource_state(plan: NodePlan, nodes_by_name: Mapping[str, Mapping[str, Any]]) -> ResourceState:
    """ResourceReady: every node the Workspace needs exists, is Ready and reports GPUs."""
    for machine in plan.machines:
        failure = _machine_failure(machine)
        if failure is not None:
            reason, message = failure
            return ResourceState(False, reason, f"Machine {_name(machine)} cannot be provisioned: {message}")
    missing = len(plan.create_slots)
    pending = [_name(m) for m in plan.machines if not machine_node_name(m)]
    if missing or pending:
        parts = []
        if missing:
            parts.append(f"{missing} to create")
        if pending:
            parts.append(f"waiting for {', '.join(pending)} to get a node")
        return ResourceState(False, WorkspaceReason.PROVISIONING_NODES,
                             f"provisioning {plan.required} GPU node(s): {'; '.join(parts)}")
    for name in plan.nodes:
        node = nodes_by_name.get(name)
        pending = ephemeral_taints(node) if node is not None else []
        if pending:
            return ResourceState(False, WorkspaceReason.WAITING_FOR_NODES,
                                 f"node {name} still carries {', '.join(pending)}; "
                                 "kube-controller-manager removes it once it sees the node Ready")
        if node is None or not node_is_ready(node):
            return ResourceState(False, WorkspaceReason.WAITING_FOR_NODES, f"node {name} is not Ready yet")
        if node_gpus(node) <= 0:
            return ResourceState(False, WorkspaceReason.WAITING_FOR_NODES,
                                 f"node {name} reports no {GPU_RESOURCE} yet; is the NVIDIA device plugin "
                                 "running on it?")
    if len(plan.nodes) < plan.required:
        return ResourceState(False, WorkspaceReason.WAITING_FOR_NODES,
                             f"{len(plan.nodes)} of {plan.required} GPU node(s) found")
    return ResourceState(True, WorkspaceReason.NODES_READY,
                         f"{len(plan.nodes)} GPU node(s) ready: {', '.join(plan.nodes)}")
