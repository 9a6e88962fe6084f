"""What the reconcilers read of the Pods, Nodes and workloads they cache: the rest is never stored.

The one home of these declarations: the Workspace controller reads Pods (readiness and failure
reasons, :mod:`.workspace.status`) and Nodes (:mod:`.workspace.nodes`, through
:func:`kaito_core.provisioning.node_problem`); the Machine controller reads Nodes
(:mod:`.machine.work`, :mod:`.machine.initialization`, :mod:`.machine.termination`, its indexes in
:mod:`.machine.watches`). A field a reader starts to read must be added here, or it reads an
absent key: ``tests/unit/test_cached_fields.py`` runs the readers on transformed objects.

Dropped: a Pod's whole ``spec`` and its status addresses, QoS class and per-container image,
IDs, resources and mounts; a Node's image list, ``nodeInfo``, addresses, daemon endpoints, CIDRs
and the ``lastHeartbeatTime`` of its conditions (which would otherwise change the cached object
at every heartbeat); the pod template and selector of the Deployments, StatefulSets and Jobs.
Everything else the operator caches (Workspaces, Machines, Services, ConfigMaps, revisions) is
kept whole but for managedFields. The operator caches no ReplicaSets (it reads its Deployments'
status instead).
"""

from __future__ import annotations

from typing import Final

from kaito_core.engine import DEPLOYMENT, JOB, NODE, POD, STATEFULSET, ResourceKind, SharedCache
from kaito_core.engine.transforms import Transform, keep_fields

__all__ = ["CACHED_FIELDS", "CACHE_TRANSFORMS", "NODE_FIELDS", "POD_FIELDS", "WORKLOAD_FIELDS", "keep_read_fields"]

_CONDITION = ("type", "status", "reason", "message", "lastTransitionTime")
_CONTAINER_STATUS = ("name", "state", "lastState")

NODE_FIELDS: Final[tuple[str, ...]] = (
    "metadata",  # labels (selectors, the machine index), deletionTimestamp, annotations
    "spec.providerID",  # the provider-id index; which Node is the Machine's instance
    "spec.taints",  # startup and "not yet" taints; the Machine's taints synced onto the Node
    "spec.unschedulable",  # cordoned
    "status.capacity",  # copied onto the Machine's status
    "status.allocatable",  # nvidia.com/gpu, and copied onto the Machine's status
    *(f"status.conditions[].{key}" for key in _CONDITION),  # Ready (and its words)
)

POD_FIELDS: Final[tuple[str, ...]] = (
    "metadata",  # the Workspace label, deletionTimestamp, owner references
    "status.phase",
    "status.reason",
    "status.message",
    *(f"status.conditions[].{key}" for key in _CONDITION),  # PodScheduled=False and why
    *(f"status.containerStatuses[].{key}" for key in _CONTAINER_STATUS),  # waiting/terminated reasons
    *(f"status.initContainerStatuses[].{key}" for key in _CONTAINER_STATUS),  # the weights puller
)

# The workloads the Workspace controller applies: it tells "already applied" by the applied-hash
# annotation and readiness by the status (:func:`.workspace.status.inference_check`,
# :func:`.workspace.status.job_checks`), never by reading back the pod template it wrote.
WORKLOAD_FIELDS: Final[tuple[str, ...]] = (
    "metadata",  # the applied-hash and tuning-hash annotations, generation, owner references
    "spec.replicas",
    "status",
)

CACHED_FIELDS: Final[dict[ResourceKind, tuple[str, ...]]] = {
    NODE: NODE_FIELDS, POD: POD_FIELDS, DEPLOYMENT: WORKLOAD_FIELDS, STATEFULSET: WORKLOAD_FIELDS,
    JOB: WORKLOAD_FIELDS}
# Built once: the cache accepts the same transform from every controller that declares it.
CACHE_TRANSFORMS: Final[dict[ResourceKind, Transform]] = {
    kind: keep_fields(*paths) for kind, paths in CACHED_FIELDS.items()}


def keep_read_fields(cache: SharedCache) -> None:
    """Have ``cache`` keep only :data:`CACHED_FIELDS` of Pods and Nodes (before it starts)."""
    for kind, transform in CACHE_TRANSFORMS.items():
        cache.set_transform(kind, transform)
