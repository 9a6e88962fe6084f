"""Condition types and reasons of Workspaces and Machines, and pure helpers to set them.

A condition message is written for a person: what is wrong and what to do.
The helpers never mutate their input; they return a new list, keeping
``lastTransitionTime`` when the status did not change, so writing status only
when it changed is a simple ``!=``.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable, Sequence
from typing import Final

from kaito_core.api.common import Condition, ConditionStatus

__all__ = [
    "CONDITION_FALSE",
    "CONDITION_TRUE",
    "CONDITION_UNKNOWN",
    "MACHINE_CONDITION_TYPES",
    "MACHINE_TIMEOUT_REASONS",
    "WORKSPACE_CONDITION_TYPES",
    "MachineConditionType",
    "MachineReason",
    "WorkspaceConditionType",
    "WorkspaceReason",
    "WorkspaceState",
    "get_condition",
    "is_condition_true",
    "machine_ready",
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


class MachineReason(enum.StrEnum):
    """Every reason a Machine condition (and a Machine event) carries; one home, matched by member.

    The typed provisioner errors carry theirs (``InsufficientCapacityError.reason`` is
    :attr:`INSUFFICIENT_CAPACITY`); a plugin's own errors may bring other strings.
    """

    # Launched
    LAUNCHING = "Launching"
    LAUNCHED = "Launched"
    LAUNCH_FAILED = "LaunchFailed"
    LAUNCH_TIMEOUT = "LaunchTimeout"
    INSUFFICIENT_CAPACITY = "InsufficientCapacity"
    QUOTA_EXCEEDED = "QuotaExceeded"
    INSTANCE_TYPE_UNAVAILABLE = "InstanceTypeUnavailable"
    INSTANCE_NOT_FOUND = "InstanceNotFound"
    PROVISIONER_ERROR = "ProvisionerError"
    NOT_FOUND = "NotFound"
    RETRYABLE = "Retryable"
    OTHER_PROVISIONER = "OtherProvisioner"
    # Registered
    REGISTERED = "Registered"
    NODE_NOT_FOUND = "NodeNotFound"
    REGISTRATION_TIMEOUT = "RegistrationTimeout"
    # Initialized
    INITIALIZED = "Initialized"
    NODE_NOT_READY = "NodeNotReady"
    GPUS_NOT_ALLOCATABLE = "GPUsNotAllocatable"
    # Ready
    READY = "Ready"
    NOT_READY = "NotReady"
    DELETING = "Deleting"

    @classmethod
    def of(cls, reason: str | None) -> MachineReason | None:
        """The member a condition's reason string names (None for a plugin's own reason)."""
        try:
            return cls(reason or "")
        except ValueError:
            return None


#: Reasons of a failed attempt: its False condition stays until the next attempt gets past it.
MACHINE_TIMEOUT_REASONS: Final = frozenset({MachineReason.LAUNCH_TIMEOUT, MachineReason.REGISTRATION_TIMEOUT,
                                            MachineReason.INSTANCE_NOT_FOUND})

_MACHINE_STEPS: Final = ((MachineConditionType.LAUNCHED, "launch"), (MachineConditionType.REGISTERED, "register"),
                         (MachineConditionType.INITIALIZED, "initialize"))


def machine_ready(conditions: Sequence[Condition] | None, *, node_name: str | None = None,
                  blocked: tuple[str, str] | None = None) -> tuple[ConditionStatus, str, str]:
    """The Machine's Ready condition (status, reason, message), from Launched, Registered and Initialized.

    * ``blocked`` (reason, message): what keeps the Machine from taking workloads that those three
      do not show (it is being deleted; its Node is not Ready, cordoned or short of GPUs) wins;
    * else the first of the three that is False, as it says;
    * else, while one is Unknown or missing, "waiting for the node to ..." (``NotReady``), except
      that a failed attempt's timeout already on Ready stays until this attempt gets past it;
    * else True.
    """
    if blocked is not None:
        return CONDITION_FALSE, blocked[0], blocked[1]
    for type_, _ in _MACHINE_STEPS:
        found = get_condition(conditions, type_)
        if found is not None and found.status == CONDITION_FALSE:
            return CONDITION_FALSE, found.reason or MachineReason.NOT_READY, found.message or ""
    for type_, step in _MACHINE_STEPS:
        found = get_condition(conditions, type_)
        if found is None or found.status != CONDITION_TRUE:
            ready = get_condition(conditions, MachineConditionType.READY)
            if ready is not None and ready.status == CONDITION_FALSE and ready.reason in MACHINE_TIMEOUT_REASONS:
                return CONDITION_FALSE, ready.reason, ready.message or ""
            return CONDITION_FALSE, MachineReason.NOT_READY, f"waiting for the node to {step}"
    return CONDITION_TRUE, MachineReason.READY, f"Node {node_name} is Ready" if node_name else "the node is Ready"


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
