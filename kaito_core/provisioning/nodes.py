"""What every provisioner needs to know about Machines and the Nodes it makes for them.

* :data:`MACHINE` reaches Machine objects through the engine's client and cache.
* :func:`node_labels_for` / :func:`node_taints_for` are the labels and taints a node
  made for a Machine must carry: ``kaito.sh/machine`` attributes it to its Machine
  (the reconciler finds Nodes by it, the garbage collector lists by it), the
  workspace labels say whom it serves, plus the Machine's own ``nodeLabels``/taints.
* :func:`node_is_ready`, :func:`allocatable_gpus`, :func:`machine_gpu_request` read
  Node and Machine dicts the same way everywhere (counts through the catalog's
  ``parse_quantity``).
* :func:`node_problem` is the one answer to "can this Node take a GPU workload now?":
  the Machine reconciler asks it about its Nodes (and writes the answer into the Machine's
  Ready condition, which the Workspace reads); for nodes a user brings (no Machine), the
  ``byo`` provisioner and the Workspace ask it directly.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kaito_presets import parse_quantity

from kaito_core.api.constants import (
    GPU_RESOURCE,
    GROUP,
    LABEL_INSTALL,
    LABEL_INSTANCE_TYPE,
    LABEL_MACHINE,
    LABEL_MACHINE_TYPE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    MACHINE_KIND,
    MACHINE_PLURAL,
    MACHINE_VERSION,
)
from kaito_core.api.machine import Machine
from kaito_core.engine.objects import conditions_of, meta, spec_of, status_of
from kaito_core.engine.resources import ResourceKind

__all__ = [
    "EPHEMERAL_TAINT_KEYS",
    "LABEL_PROVISIONER",
    "MACHINE",
    "NodeCheck",
    "NodeProblem",
    "allocatable_gpus",
    "ephemeral_taints",
    "machine_gpu_request",
    "node_is_ready",
    "node_labels_for",
    "node_problem",
    "node_taints_for",
    "parse_count",
    "parse_timestamp",
    "requirement_problem",
    "taint_matches",
]

#: The Machine kind (cluster-scoped) as the engine reaches it.
MACHINE: Final = ResourceKind(GROUP, MACHINE_VERSION, MACHINE_KIND, MACHINE_PLURAL, namespaced=False)
#: On a Node: the provisioner plugin that made it (so each plugin lists only its own nodes).
LABEL_PROVISIONER: Final = f"{GROUP}/provisioner"

_PASSED_ON = (LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, LABEL_MACHINE_TYPE, LABEL_INSTALL)


def node_labels_for(machine: Machine, provisioner: str | None = None) -> dict[str, str]:
    """The labels a node made for ``machine`` carries: ours, the instance type, then ``spec.nodeLabels``."""
    labels: dict[str, str] = {LABEL_MACHINE: machine.name, LABEL_MACHINE_TYPE: "gpu"}
    own = machine.metadata.labels or {}
    labels.update({key: own[key] for key in _PASSED_ON if key in own})
    if machine.spec.instance_type:
        labels[LABEL_INSTANCE_TYPE] = machine.spec.instance_type
    if provisioner:
        labels[LABEL_PROVISIONER] = provisioner
    labels.update(machine.spec.node_labels or {})
    return labels


def node_taints_for(machine: Machine, *, startup: bool = True) -> list[dict[str, str]]:
    """``spec.taints`` (and ``spec.startupTaints`` unless ``startup=False``) as Kubernetes Taint dicts."""
    taints = list(machine.spec.taints or [])
    if startup:
        taints += list(machine.spec.startup_taints or [])
    out: list[dict[str, str]] = []
    for taint in taints:
        item = {"key": taint.key, "effect": taint.effect}
        if taint.value is not None:
            item["value"] = taint.value
        if not any(taint_matches(item, seen) for seen in out):
            out.append(item)
    return out


def taint_matches(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same taint: key, effect and value (a missing value equals an empty one)."""
    return bool(a.get("key") == b.get("key") and a.get("effect") == b.get("effect")
                and (a.get("value") or "") == (b.get("value") or ""))


#: Taints Kubernetes itself puts on a node that is not usable yet (or any more); like Karpenter's
#: "known ephemeral taints", a node is not initialized while it carries one of them.
EPHEMERAL_TAINT_KEYS: Final = (
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.cloudprovider.kubernetes.io/uninitialized",
)


def ephemeral_taints(node: Mapping[str, Any]) -> list[str]:
    """``key:effect`` of each ephemeral taint still on the Node (empty when it is clear)."""
    return [f"{t.get('key')}:{t.get('effect')}" for t in spec_of(node).get("taints") or ()
            if t.get("key") in EPHEMERAL_TAINT_KEYS]


def node_is_ready(node: Mapping[str, Any]) -> bool:
    """True when the Node dict has condition Ready=True."""
    for cond in conditions_of(node):
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def parse_count(value: Any) -> int:
    """A countable quantity (``"2"``, ``2``, ``"2k"``) as an int; 0 when it is not one
    (the catalog's :func:`kaito_presets.parse_quantity`)."""
    try:
        return parse_quantity(value)
    except ValueError:
        return 0


def allocatable_gpus(node: Mapping[str, Any]) -> int:
    """``status.allocatable["nvidia.com/gpu"]`` of a Node dict (0 when absent)."""
    return parse_count((status_of(node).get("allocatable") or {}).get(GPU_RESOURCE))


class NodeCheck(enum.Enum):
    """What :func:`node_problem` found wrong, in the order it looks."""

    DELETING = "deleting"
    CORDONED = "cordoned"
    NOT_READY = "not-ready"
    GPUS = "gpus"
    TAINTED = "tainted"


@dataclass(frozen=True)
class NodeProblem:
    """Why a Node cannot take a GPU workload now; ``str()`` is the short account (``"cordoned"``)."""

    check: NodeCheck
    text: str
    gpus: int = 0
    """Allocatable ``nvidia.com/gpu`` (for :attr:`NodeCheck.GPUS`)."""
    taints: tuple[str, ...] = ()
    """``key:effect`` of the ephemeral taints (for :attr:`NodeCheck.TAINTED`)."""

    def __str__(self) -> str:
        return self.text


def node_problem(node: Mapping[str, Any], *, gpus: int | None = None, settled: bool = True) -> NodeProblem | None:
    """Why ``node`` cannot take a GPU workload now, or None when it can.

    In order: it is being deleted; cordoned; not Ready; (``gpus``: fewer allocatable
    ``nvidia.com/gpu``); (``settled``: it still carries a taint Kubernetes puts on a node it does not
    trust yet, so a pod sent there now would be Unschedulable).
    """
    if meta(node).deleting:
        return NodeProblem(NodeCheck.DELETING, "being deleted")
    if spec_of(node).get("unschedulable"):
        return NodeProblem(NodeCheck.CORDONED, "cordoned")
    if not node_is_ready(node):
        return NodeProblem(NodeCheck.NOT_READY, "not Ready")
    if gpus is not None:
        have = allocatable_gpus(node)
        if have < gpus:
            return NodeProblem(NodeCheck.GPUS, f"{have} allocatable {GPU_RESOURCE}, needs {gpus}", gpus=have)
    if settled:
        pending = ephemeral_taints(node)
        if pending:
            return NodeProblem(NodeCheck.TAINTED, f"still carries {', '.join(pending)}", taints=tuple(pending))
    return None


def machine_gpu_request(machine: Machine) -> int | None:
    """The GPUs the Machine asks for in ``spec.resources.requests``, or None when it does not say."""
    requests = (machine.spec.resources.requests if machine.spec.resources else None) or {}
    if GPU_RESOURCE not in requests:
        return None
    return parse_count(requests[GPU_RESOURCE])


def parse_timestamp(value: str | None) -> float | None:
    """Unix time of an RFC 3339 timestamp as Kubernetes writes them (None when absent or bad)."""
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def requirement_problem(labels: Mapping[str, str], requirement: Mapping[str, Any]) -> str | None:
    """Why a node with ``labels`` fails one node selector requirement (None when it satisfies it)."""
    key = str(requirement.get("key"))
    operator = requirement.get("operator", "In")
    values = [str(v) for v in requirement.get("values") or ()]
    value = labels.get(key)
    if operator == "In" and value not in values:
        return f"label {key}={value!r} is not one of {values}"
    if operator == "NotIn" and value in values:
        return f"label {key}={value!r} is excluded"
    if operator == "Exists" and value is None:
        return f"label {key} is missing"
    if operator == "DoesNotExist" and value is not None:
        return f"label {key} is present"
    if operator in ("Gt", "Lt"):
        try:
            have, bound = int(value or ""), int(values[0])
        except (ValueError, IndexError):
            return f"label {key}={value!r} is not an integer to compare"
        if (operator == "Gt" and not have > bound) or (operator == "Lt" and not have < bound):
            return f"label {key}={have} is not {'>' if operator == 'Gt' else '<'} {bound}"
    return None
