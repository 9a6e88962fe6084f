"""Initialized: the Node can take the workload, and Ready says so while it lasts.

Our labels (and, on nodes we own, the Machine's taints) are copied onto the Node; once it is
Ready with the GPUs the Machine asks for (``require_gpus``), the startup taints are removed.
Initialized waits, as Karpenter does, until Kubernetes' own "not yet" taints are gone too
(``node.kubernetes.io/not-ready`` and the like). What the Node lacks is decided by
:func:`~kaito_core.provisioning.nodes.node_problem`, the one check for GPU nodes; after
initialization the same check keeps Ready honest (a Node that goes NotReady, is cordoned or
loses its GPUs makes the Machine not Ready), which is all the Workspace reads.
"""

from __future__ import annotations

from typing import Any

from kaito_core.api.conditions import CONDITION_TRUE, CONDITION_UNKNOWN, MachineReason
from kaito_core.api.constants import GPU_RESOURCE
from kaito_core.controllers.machine.work import INITIALIZED, MachineWork
from kaito_core.engine.objects import meta, spec_of, status_of
from kaito_core.engine.reconcile import Result
from kaito_core.engine.resources import NODE
from kaito_core.provisioning.nodes import (
    NodeCheck,
    NodeProblem,
    allocatable_gpus,
    machine_gpu_request,
    node_labels_for,
    node_problem,
    node_taints_for,
    taint_matches,
)

__all__ = ["node_health", "reconcile"]


def node_health(node: dict[str, Any], wanted_gpus: int | None) -> tuple[NodeProblem, str, str] | None:
    """What keeps ``node`` from serving a Machine that needs ``wanted_gpus`` (None: not checked):
    the problem and the (reason, message) the Machine's conditions carry; None when it is fine."""
    problem = node_problem(node, gpus=wanted_gpus)
    if problem is None:
        return None
    name = meta(node).name
    if problem.check is NodeCheck.GPUS:
        return problem, MachineReason.GPUS_NOT_ALLOCATABLE, (
            f"Node {name} has {problem.gpus} allocatable {GPU_RESOURCE}, the Machine needs {wanted_gpus}; "
            f"is the NVIDIA device plugin running on it?")
    if problem.check is NodeCheck.TAINTED:
        # The node lifecycle controller removes these once it has seen the Node Ready; a pod
        # sent there before would be Unschedulable.
        return problem, MachineReason.NODE_NOT_READY, (
            f"Node {name} is Ready but still carries {', '.join(problem.taints)}; "
            "kube-controller-manager removes it once it sees the Node Ready")
    words = {NodeCheck.NOT_READY: "is not Ready", NodeCheck.CORDONED: "is cordoned",
             NodeCheck.DELETING: "is being deleted"}
    return problem, MachineReason.NODE_NOT_READY, f"Node {name} {words[problem.check]}"


async def reconcile(work: MachineWork) -> Result:
    """Sync the registered Node, then Initialized (once) and what Ready waits for (always)."""
    node = work.node
    if node is None:
        return Result()
    wanted = machine_gpu_request(work.machine) or 1
    checked = wanted if work.deps.settings.require_gpus else None
    initialized = work.is_true(INITIALIZED)
    before = node_problem(node, gpus=checked)
    usable = before is None or before.check is NodeCheck.TAINTED
    node = await _sync_node(work, node, remove_startup=usable and not initialized)
    status = status_of(node)
    work.status.capacity = dict(status.get("capacity") or {}) or None
    work.status.allocatable = dict(status.get("allocatable") or {}) or None
    health = node_health(node, checked)
    if health is not None:
        problem, reason, message = health
        if not initialized:
            yet = " yet" if problem.check is NodeCheck.NOT_READY else ""
            work.set(INITIALIZED, CONDITION_UNKNOWN, reason, message + yet)
        work.blocked = (reason, message)
        return Result()
    if not initialized:
        message = f"Node {meta(node).name} is Ready with {allocatable_gpus(node)} allocatable GPU(s)"
        work.set(INITIALIZED, CONDITION_TRUE, MachineReason.INITIALIZED, message)
        work.event(MachineReason.INITIALIZED, message)
    return Result()


async def _sync_node(work: MachineWork, node: dict[str, Any], *, remove_startup: bool) -> dict[str, Any]:
    """Copy our labels (and, on nodes we own, the Machine's taints) onto the Node; drop startup taints."""
    machine = work.machine
    view = meta(node)
    labels = view.labels
    missing = {k: v for k, v in node_labels_for(machine).items() if labels.get(k) != v}
    patch: dict[str, Any] = {}
    if missing:
        patch["metadata"] = {"labels": missing}
    if not work.deps.handle.keeps_nodes:
        taints: list[dict[str, Any]] = list(spec_of(node).get("taints") or [])
        regular = node_taints_for(machine, startup=False)
        startup = [t for t in node_taints_for(machine, startup=True)
                   if not any(taint_matches(t, r) for r in regular)]
        kept = [t for t in taints if not (remove_startup and any(taint_matches(t, s) for s in startup))]
        kept += [t for t in regular if not any(taint_matches(t, have) for have in kept)]
        if kept != taints:
            patch["spec"] = {"taints": kept}
    if not patch:
        return node
    patch.setdefault("metadata", {})["resourceVersion"] = view.resource_version
    updated: dict[str, Any] = await work.deps.client.patch(NODE, view.name, patch)
    return updated
