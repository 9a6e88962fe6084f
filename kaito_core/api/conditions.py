"""Condition types and reasons of Workspaces and Machines, and pure helpers to set them.

A condition message is written for a person: what is wrong and what to do.
The helpers never mutate their input; they return a new list, keeping
``lastTransitionTime`` when the status did not change, so writing status only
when it changed is a simple ``!=``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Final

from kaito_core.api.common import Condition, ConditionStatus

__all__ = [
    "CONDITION_FALSE",
    "CONDITION_TRUE",
    "CONDITION_UNKNOWN",
    "MACHINE_CONDITION_TYPES",
    "WORKSPACE_CONDITION_TYPES",
    "MachineConditionType",
    "MachineReason",
    "WorkspaceConditionType",
    "WorkspaceReason",
    "WorkspaceState",
    "get_condition",
    "is_condition_true",
    "now_rfc3339",
    "set_condition",
]

CONDITION_TRUE: Final = "True"
CONDITION_FALSE: Final = "False"
CONDITION_UNKNOWN: Final = "Unknown"


class WorkspaceConditionType:
    """Condition types on ``Workspace.status.conditions``."""

    #: The GPU nodes the Workspace needs exist and are Ready.
    RESOURCE_READY: Final = "ResourceReady"
    #: The inference workload (Deployment/StatefulSet) is available.
    INFERENCE_READY: Final = "InferenceReady"
    #: The tuning Job was created and its pod started.
    JOB_STARTED: Final = "JobStarted"
    #: Summary: inference is serving, or the tuning job completed.
    WORKSPACE_SUCCEEDED: Final = "WorkspaceSucceeded"
    #: Summary for ``kubectl get``: everything the Workspace asks for is in place.
    WORKSPACE_READY: Final = "WorkspaceReady"


WORKSPACE_CONDITION_TYPES: Final = (
    WorkspaceConditionType.RESOURCE_READY,
    WorkspaceConditionType.INFERENCE_READY,
    WorkspaceConditionType.JOB_STARTED,
    WorkspaceConditionType.WORKSPACE_SUCCEEDED,
    WorkspaceConditionType.WORKSPACE_READY,
)


class WorkspaceReason:
    """Reasons for Workspace conditions (CamelCase, stable: tools match on them)."""

    # any condition
    VALIDATION_FAILED: Final = "ValidationFailed"  # the spec is invalid; the message says what to fix
    DELETING: Final = "Deleting"
    # ResourceReady
    NODES_READY: Final = "NodesReady"
    PROVISIONING_NODES: Final = "ProvisioningNodes"
    WAITING_FOR_NODES: Final = "WaitingForNodes"
    INSUFFICIENT_CAPACITY: Final = "InsufficientCapacity"
    QUOTA_EXCEEDED: Final = "QuotaExceeded"
    INSTANCE_TYPE_UNAVAILABLE: Final = "InstanceTypeUnavailable"
    PROVISIONING_FAILED: Final = "ProvisioningFailed"
    # InferenceReady
    INFERENCE_READY: Final = "InferenceReady"
    DEPLOYING: Final = "Deploying"
    WAITING_FOR_RESOURCE: Final = "WaitingForResource"
    INFERENCE_FAILED: Final = "InferenceFailed"
    # JobStarted / WorkspaceSucceeded
    JOB_STARTED: Final = "JobStarted"
    JOB_PENDING: Final = "JobPending"
    JOB_SUCCEEDED: Final = "JobSucceeded"
    JOB_FAILED: Final = "JobFailed"
    # WorkspaceSucceeded / WorkspaceReady
    SUCCEEDED: Final = "Succeeded"
    READY: Final = "Ready"
    PENDING: Final = "Pending"
    FAILED: Final = "Failed"


class WorkspaceState:
    """Values of ``Workspace.status.state``: one word for the whole Workspace."""

    PENDING: Final = "Pending"
    PROVISIONING: Final = "Provisioning"
    DEPLOYING: Final = "Deploying"
    READY: Final = "Ready"
    RUNNING: Final = "Running"  # a tuning job is running
    SUCCEEDED: Final = "Succeeded"  # a tuning job completed
    FAILED: Final = "Failed"
    DELETING: Final = "Deleting"


class MachineConditionType:
    """Condition types on ``Machine.status.conditions`` (Karpenter's NodeClaim lifecycle)."""

    #: The provisioner created the instance (``status.providerID`` is set).
    LAUNCHED: Final = "Launched"
    #: A Node for the instance joined the cluster (``status.nodeName`` is set).
    REGISTERED: Final = "Registered"
    #: The Node is Ready, startup taints are gone and GPUs are allocatable.
    INITIALIZED: Final = "Initialized"
    #: Summary: the Machine can take workloads.
    READY: Final = "Ready"


MACHINE_CONDITION_TYPES: Final = (
    MachineConditionType.LAUNCHED,
    MachineConditionType.REGISTERED,
    MachineConditionType.INITIALIZED,
    MachineConditionType.READY,
)


class MachineReason:
    """Reasons for Machine conditions."""

    LAUNCHED: Final = "Launched"
    LAUNCHING: Final = "Launching"
    INSUFFICIENT_CAPACITY: Final = "InsufficientCapacity"
    QUOTA_EXCEEDED: Final = "QuotaExceeded"
    INSTANCE_TYPE_UNAVAILABLE: Final = "InstanceTypeUnavailable"
    LAUNCH_FAILED: Final = "LaunchFailed"
    REGISTERED: Final = "Registered"
    NODE_NOT_FOUND: Final = "NodeNotFound"
    INITIALIZED: Final = "Initialized"
    NODE_NOT_READY: Final = "NodeNotReady"
    STARTUP_TAINTS_PRESENT: Final = "StartupTaintsPresent"
    GPUS_NOT_ALLOCATABLE: Final = "GPUsNotAllocatable"
    READY: Final = "Ready"
    NOT_READY: Final = "NotReady"
    DELETING: Final = "Deleting"


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it (``2026-01-02T03:04:05Z``)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_condition(conditions: Iterable[Condition] | None, type_: str) -> Condition | None:
    """The condition of that type, or None."""
    return next((c for c in conditions or () if c.type == type_), None)


def is_condition_true(conditions: Iterable[Condition] | None, type_: str) -> bool:
    found = get_condition(conditions, type_)
    return found is not None and found.status == CONDITION_TRUE


def set_condition(
    conditions: Sequence[Condition] | None,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    observed_generation: int | None = None,
    now: str | None = None,
) -> list[Condition]:
    """A new condition list with ``type_`` set; other conditions keep their order.

    ``lastTransitionTime`` changes only when the status changes; when nothing
    changed at all the result equals the input.
    """
    existing = get_condition(conditions, type_)
    if existing is not None and existing.status == status and existing.last_transition_time:
        transition = existing.last_transition_time
    else:
        transition = now or now_rfc3339()
    updated = Condition(
        type=type_, status=status, reason=reason, message=message,
        last_transition_time=transition, observed_generation=observed_generation,
    )
    result: list[Condition] = []
    replaced = False
    for condition in conditions or ():
        if condition.type == type_:
            if not replaced:
                result.append(updated)
                replaced = True
        else:
            result.append(condition)
    if not replaced:
        result.append(updated)
    return result
