"""Nodes for a Workspace: how many, which existing ones, which Machines to create or delete.

Pure functions over cached objects (plain dicts), so every decision is unit-tested.

Whether a node can take the workload is decided once: for a node of one of the Workspace's
Machines, by that Machine's Ready condition (the Machine reconciler keeps it true to its Node);
for a node the user brings, by :func:`kaito_core.provisioning.node_problem`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito_presets import GpuSku, ModelPreset

from kaito_core.api import (
    ANNOTATION_NODE_IMAGE_FAMILY,
    CONDITION_FALSE,
    CONDITION_TRUE,
    GPU_RESOURCE,
    GPU_TAINT,
    LABEL_INSTANCE_TYPE,
    LABEL_MACHINE_TYPE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    MACHINE_API_VERSION,
    MACHINE_FINALIZER,
    MACHINE_KIND,
    MachineConditionType,
    MachineReason,
    Workspace,
    WorkspaceReason,
)
from kaito_core.controllers.workspace.byo_labels import label_fit_problem
from kaito_core.controllers.workspace.naming import machine_name, machine_slot
from kaito_core.engine import condition_of, conditions_of, meta, status_of
from kaito_core.provisioning.gpu_labels import NodeGpus, node_gpus
from kaito_core.provisioning.identity import InstallIdentity
from kaito_core.provisioning.nodes import NodeCheck, node_problem

__all__ = [
    "NodePlan",
    "ResourceState",
    "labelled_gpus",
    "machine_manifest",
    "machine_node_name",
    "matches_selector",
    "plan_nodes",
    "qualified_nodes",
    "required_node_count",
    "resource_state",
    "unplaced_message",
    "workspace_labels",
    "workspace_node_labels",
]

#: Machine condition reasons that mean "this will not come up by waiting"; surfaced in ResourceReady.
_MACHINE_FAILURES: dict[MachineReason, str] = {
    MachineReason.INSUFFICIENT_CAPACITY: WorkspaceReason.INSUFFICIENT_CAPACITY,
    MachineReason.QUOTA_EXCEEDED: WorkspaceReason.QUOTA_EXCEEDED,
    MachineReason.INSTANCE_TYPE_UNAVAILABLE: WorkspaceReason.INSTANCE_TYPE_UNAVAILABLE,
    MachineReason.LAUNCH_FAILED: WorkspaceReason.PROVISIONING_FAILED,
}


def workspace_labels(ws: Workspace) -> dict[str, str]:
    """The two labels pointing back at a Workspace (on Machines, their nodes and the workloads)."""
    return {LABEL_WORKSPACE: ws.name, LABEL_WORKSPACE_NAMESPACE: ws.namespace}


def required_node_count(ws: Workspace, preset: ModelPreset | None, sku: GpuSku | NodeGpus | None) -> int:
    """``resource.count``, or as many nodes as the preset's GPU memory needs on this SKU (or on the GPUs a
    node's labels show) if more."""
    count = ws.resource.count
    if preset is None or sku is None or ws.tuning is not None:
        return count
    by_memory = math.ceil(preset.inference.gpu_memory / sku.gpu_memory)
    by_gpus = math.ceil(preset.inference.gpu_count / sku.gpu_count)
    return max(count, by_memory, by_gpus)


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


def workspace_node_labels(ws: Workspace) -> dict[str, str]:
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


def machine_node_name(machine: Mapping[str, Any]) -> str | None:
    name = status_of(machine).get("nodeName")
    return str(name) if name else None


def _owner(node: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(workspace, namespace) a node was made for, from its ``kaito.sh/workspace*`` labels."""
    labels = meta(node).labels
    return labels.get(LABEL_WORKSPACE), labels.get(LABEL_WORKSPACE_NAMESPACE)


def qualified_nodes(ws: Workspace, nodes: Iterable[Mapping[str, Any]], *, preset: ModelPreset | None = None,
                    unfit: dict[str, str] | None = None) -> list[str]:
    """Existing Ready nodes this Workspace may use: they match ``labelSelector`` and either are in
    ``preferredNodes``, or carry the instance type, or (no instance type: bring-your-own by labels) their
    GPU feature discovery labels show GPUs that fit ``preset``; never a node made for another Workspace.
    Preferred nodes first, then by name. Nodes picked by labels that do not fit go into ``unfit`` (why)."""
    selector = ws.resource.label_selector.to_dict()
    preferred = list(ws.resource.preferred_nodes or [])
    instance_type = (ws.resource.instance_type or "").lower()
    out: list[str] = []
    for node in nodes:
        labels, name = meta(node).labels, meta(node).name
        if node_problem(node) is not None or not matches_selector(labels, selector):
            continue
        owner = _owner(node)
        if owner[0] is not None and owner != (ws.name, ws.namespace):
            continue
        if name in preferred or (instance_type and labels.get(LABEL_INSTANCE_TYPE, "").lower() == instance_type):
            out.append(name)
        elif not instance_type:
            why = label_fit_problem(ws, preset, node)
            if why is None:
                out.append(name)
            elif unfit is not None:
                unfit[name] = why
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
    unfit: dict[str, str] = field(default_factory=dict)
    """Nodes the labelSelector picks (no instance type) whose GPU labels do not fit, and why."""
    gpus: NodeGpus | None = None
    """No instance type: the GPUs the nodes' labels show (:func:`labelled_gpus`), in place of a SKU's."""

    @property
    def nodes(self) -> list[str]:
        """The nodes the workload goes on (Machines without a node yet are not listed)."""
        names = list(self.byo)
        for machine in self.machines:
            node = machine_node_name(machine)
            if node and node not in names:
                names.append(node)
        return sorted(names)


def labelled_gpus(ws: Workspace, preset: ModelPreset | None, nodes: Iterable[Mapping[str, Any]]) -> NodeGpus | None:
    """No instance type: the labelled GPUs of the first node this Workspace may use (:func:`qualified_nodes`)
    that has them; the pods ask for its GPUs and the node count is sized by its memory, as by a SKU's."""
    by_name = {meta(n).name: n for n in nodes}
    for name in qualified_nodes(ws, by_name.values(), preset=preset):
        gpus = node_gpus(by_name[name])
        if isinstance(gpus, NodeGpus):
            return gpus
    return None


def unplaced_message(plan: NodePlan) -> str:
    """ResourceReady's message when nodes are missing and there is no instance type to provision them."""
    said = "".join(f"; {plan.unfit[name]}" for name in sorted(plan.unfit))
    return (f"{len(plan.nodes)} of {plan.required} node(s) are ready, match resource.labelSelector (or are in "
            f"resource.preferredNodes) and fit{said}; add or label nodes that fit, or set resource.instanceType "
            "to provision the rest")


def _slot(ws: Workspace, machine: Mapping[str, Any]) -> int:
    slot = machine_slot(ws.namespace, ws.name, meta(machine).name)
    return slot if slot is not None else 1 << 30


def plan_nodes(ws: Workspace, required: int, machines: Sequence[Mapping[str, Any]],
               nodes: Iterable[Mapping[str, Any]], *, preset: ModelPreset | None = None) -> NodePlan:
    """Keep the Machines we have (up to ``required``), fill up with qualified existing nodes,
    create Machines for the rest in the lowest free slots, delete Machines beyond ``required``.

    Slots are only ever taken from names the cache does not show, and a create of a name
    that exists answers AlreadyExists: a stale cache cannot double a Machine.
    """
    nodes = list(nodes)
    own = sorted((dict(m) for m in machines), key=lambda m: (_slot(ws, m), meta(m).name))
    live = [m for m in own if not meta(m).deleting]
    keep, extra = live[:required], live[required:]
    machine_nodes = {machine_node_name(m) for m in own} - {None}
    unfit: dict[str, str] = {}
    candidates = [n for n in qualified_nodes(ws, nodes, preset=preset, unfit=unfit) if n not in machine_nodes]
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
                    delete_machines=[meta(m).name for m in extra], unfit=unfit)
    chosen = set(plan.nodes)
    plan.labelled = {meta(n).name for n in nodes
                     if meta(n).name in chosen and _owner(n) == (ws.name, ws.namespace)}
    return plan


def machine_manifest(ws: Workspace, slot: int, *, preset: ModelPreset | None, sku: GpuSku | NodeGpus | None,
                     provisioner: str | None = None, install: InstallIdentity | None = None) -> dict[str, Any]:
    """The Machine for one slot: deterministic name, labels back to the Workspace (and to the
    install that made it, passed on to its node), GPU taint."""
    labels = {**workspace_node_labels(ws), **(install.labels() if install else {})}
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
    usable: tuple[str, ...] = ()
    """The nodes of the plan that can take the workload now (``status.workerNodes``): a node still
    coming up is not listed, so the status is not written once more when it registers."""


def _machine_failure(machine: Mapping[str, Any]) -> tuple[str, str] | None:
    for cond in conditions_of(machine):
        reason = MachineReason.of(cond.get("reason"))
        if cond.get("status") == CONDITION_FALSE and reason in _MACHINE_FAILURES:
            return _MACHINE_FAILURES[reason], str(cond.get("message") or reason)
    return None


def _machine_waiting(machine: Mapping[str, Any], node: str) -> str | None:
    """Why the Machine behind ``node`` is not Ready (its own words), or None when it is."""
    ready = condition_of(machine, MachineConditionType.READY)
    if ready is not None and ready.get("status") == CONDITION_TRUE:
        return None
    said = f": {ready.get('message')}" if ready is not None and ready.get("message") else " yet"
    return f"node {node} of Machine {meta(machine).name} is not Ready{said}"


def _byo_waiting(name: str, node: Mapping[str, Any] | None) -> str | None:
    """Why a node the user brings cannot take the workload (None when it can)."""
    problem = node_problem(node, gpus=1) if node is not None else None
    if node is not None and problem is None:
        return None
    if problem is not None and problem.check is NodeCheck.TAINTED:
        return (f"node {name} {problem}; kube-controller-manager removes it once it sees the node Ready")
    if problem is not None and problem.check is NodeCheck.GPUS:
        return f"node {name} reports no {GPU_RESOURCE} yet; is the NVIDIA device plugin running on it?"
    return f"node {name} is not Ready yet"


def resource_state(plan: NodePlan, nodes_by_name: Mapping[str, Mapping[str, Any]], *,
                   detail: bool = True) -> ResourceState:
    """ResourceReady: every node the Workspace needs exists and can take the workload: its
    Machine is Ready, or (a node the user brings) it passes :func:`node_problem`.

    ``detail=False`` (a wait that is still young): while Machines come up, one steady message that
    names them instead of echoing each step of theirs (launched, registered, tainted, ...), so a
    Workspace's status is written once for the whole wait, not once per Machine step; their
    failures still show at once, and a wait that lasts gets the detail.
    """
    state = _resource_state(plan, nodes_by_name, detail)
    machine_of = {machine_node_name(m): m for m in plan.machines}

    def usable(name: str) -> bool:
        owner = machine_of.get(name)
        return (_machine_waiting(owner, name) if owner else _byo_waiting(name, nodes_by_name.get(name))) is None

    return dataclasses.replace(state, usable=tuple(n for n in plan.nodes if usable(n)))


def _resource_state(plan: NodePlan, nodes_by_name: Mapping[str, Mapping[str, Any]], detail: bool) -> ResourceState:
    for machine in plan.machines:
        failure = _machine_failure(machine)
        if failure is not None:
            reason, message = failure
            return ResourceState(False, reason, f"Machine {meta(machine).name} cannot be provisioned: {message}")
    missing = len(plan.create_slots)
    pending = [meta(m).name for m in plan.machines if not machine_node_name(m)]
    if not detail:
        coming = sorted(meta(m).name for m in plan.machines
                        if _machine_waiting(m, machine_node_name(m) or "") is not None)
        if missing or coming:
            named = f"Machine {', '.join(coming)} (kubectl describe machine says how far each is)" if coming else ""
            parts = [f"{missing} to create"] * bool(missing) + [f"waiting for {named}"] * bool(coming)
            return ResourceState(False, WorkspaceReason.PROVISIONING_NODES,
                                 f"provisioning {plan.required} GPU node(s): {'; '.join(parts)}")
    if missing or pending:
        parts = []
        if missing:
            parts.append(f"{missing} to create")
        if pending:
            parts.append(f"waiting for {', '.join(pending)} to get a node")
        return ResourceState(False, WorkspaceReason.PROVISIONING_NODES,
                             f"provisioning {plan.required} GPU node(s): {'; '.join(parts)}")
    machine_of = {machine_node_name(m): m for m in plan.machines}
    for name in plan.nodes:
        owner = machine_of.get(name)
        waiting = _machine_waiting(owner, name) if owner else _byo_waiting(name, nodes_by_name.get(name))
        if waiting is not None:
            return ResourceState(False, WorkspaceReason.WAITING_FOR_NODES, waiting)
    if len(plan.nodes) < plan.required:
        return ResourceState(False, WorkspaceReason.WAITING_FOR_NODES,
                             f"{len(plan.nodes)} of {plan.required} GPU node(s) found")
    return ResourceState(True, WorkspaceReason.NODES_READY,
                         f"{len(plan.nodes)} GPU node(s) ready: {', '.join(plan.nodes)}")
