"""Status: conditions recomputed from what is observed, every run. Pure functions.

ResourceReady (nodes), InferenceReady (ready replicas == desired; a CrashLoopBackOff,
OOMKilled or ImagePullBackOff surfaces in the message), JobStarted and WorkspaceSucceeded
(following the tuning Job, with the failure reason from its pod), WorkspaceReady (the summary),
``workerNodes`` and ``state``. Each condition carries the generation it was computed from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kaito_core.api import (
    CONDITION_FALSE,
    CONDITION_TRUE,
    Condition,
    ConditionStatus,
    WorkspaceConditionType,
    WorkspaceReason,
    WorkspaceState,
    set_condition,
)

__all__ = [
    "Check",
    "Observed",
    "Transition",
    "compute_status",
    "inference_check",
    "job_checks",
    "pod_problem",
    "status_equal",
    "status_events",
    "transitions",
]

T = WorkspaceConditionType
R = WorkspaceReason

#: Waiting reasons of a container that will not fix themselves by waiting a bit.
_BAD_WAITING = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
_BAD_TERMINATED = {"OOMKilled", "Error", "ContainerCannotRun", "DeadlineExceeded"}


@dataclass(frozen=True)
class Check:
    """One condition's verdict."""

    status: ConditionStatus
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == CONDITION_TRUE


@dataclass
class Observed:
    """What a reconcile saw; the input of :func:`compute_status`."""

    generation: int | None = None
    is_tuning: bool = False
    invalid: str | None = None
    deleting: bool = False
    resource: Check | None = None
    workload: Check | None = None
    job_started: Check | None = None
    job_succeeded: Check | None = None
    worker_nodes: list[str] = field(default_factory=list)


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def pod_problem(pods: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of the first pod that is stuck: a crash loop, OOM kill, image pull error,
    or unschedulable; None when nothing is wrong (or not yet)."""
    for pod in sorted(pods, key=_pod_name):
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        init_statuses = list(status.get("initContainerStatuses") or [])
        statuses = init_statuses + list(status.get("containerStatuses") or [])
        for cs in statuses:
            state = cs.get("state") or {}
            last = (cs.get("lastState") or {}).get("terminated") or {}
            waiting = state.get("waiting") or {}
            terminated = state.get("terminated") or {}
            name = cs.get("name", "?")
            if waiting.get("reason") in _BAD_WAITING:
                extra = f" (last exit: {last['reason']})" if last.get("reason") in _BAD_TERMINATED else ""
                # The container's own word on why it stopped (the weights puller writes one) beats
                # the kubelet's back-off notice.
                said = str(last.get("message") or "").strip()
                detail = f": {said}" if said else (f": {waiting['message']}" if waiting.get("message") else "")
                return (str(waiting["reason"]),
                        f"pod {_pod_name(pod)}: container {name} is {waiting['reason']}{extra}{detail}")
            if terminated.get("reason") in _BAD_TERMINATED and int(terminated.get("exitCode") or 0) != 0 \
                    and str(terminated.get("message") or "").strip() and cs in init_statuses:
                # An init container that just failed, before the kubelet's back-off shows.
                return (str(terminated["reason"]), f"pod {_pod_name(pod)}: container {name} failed: "
                        f"{str(terminated['message']).strip()}")
            for term in (terminated, last):
                if term.get("reason") == "OOMKilled":
                    return "OOMKilled", (f"pod {_pod_name(pod)}: container {name} was OOMKilled; the model needs "
                                         "more memory than the node gives it")
        for cond in status.get("conditions") or ():
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason"):
                return str(cond["reason"]), f"pod {_pod_name(pod)} cannot be scheduled: {cond.get('message', '')}"
    return None


def inference_check(workload: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]],
                    blocked: str | None = None) -> Check:
    """InferenceReady: the Deployment/StatefulSet has all desired replicas updated and ready."""
    if blocked:
        return Check(CONDITION_FALSE, R.INFERENCE_FAILED, blocked)
    if workload is None:
        return Check(CONDITION_FALSE, R.WAITING_FOR_RESOURCE, "waiting for the GPU nodes before deploying")
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    meta = workload.get("metadata") or {}
    desired = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    current = int(status.get("replicas") or 0)
    observed = int(status.get("observedGeneration") or 0)
    kind = workload.get("kind", "Deployment")
    settled = observed >= int(meta.get("generation") or 0)
    if kind == "StatefulSet":
        rolled = status.get("currentRevision") == status.get("updateRevision") or updated >= desired
    else:
        rolled = updated >= desired and current <= desired
    if settled and rolled and ready >= desired:
        return Check(CONDITION_TRUE, R.INFERENCE_READY, f"{ready}/{desired} inference replica(s) ready")
    problem = pod_problem(pods)
    if problem is not None:
        return Check(CONDITION_FALSE, R.INFERENCE_FAILED, f"{problem[0]}: {problem[1]}")
    return Check(CONDITION_FALSE, R.DEPLOYING, f"{ready}/{desired} inference replica(s) ready")


def _job_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def _failure_from_pods(pods: Sequence[Mapping[str, Any]]) -> str | None:
    for pod in sorted(pods, key=_pod_name):
        status = pod.get("status") or {}
        for cs in list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or []):
            term = (cs.get("state") or {}).get("terminated") or {}
            if term and int(term.get("exitCode") or 0) != 0:
                detail = f": {term['message'].strip()}" if term.get("message") else ""
                return (f"pod {_pod_name(pod)}: container {cs.get('name')} exited with {term.get('exitCode')} "
                        f"({term.get('reason', 'Error')}){detail}")
        if status.get("phase") == "Failed" and status.get("reason"):
            return f"pod {_pod_name(pod)} failed: {status['reason']}: {status.get('message', '')}"
    problem = pod_problem(pods)
    return f"{problem[0]}: {problem[1]}" if problem else None


def job_checks(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]],
               blocked: str | None = None) -> tuple[Check, Check]:
    """(JobStarted, WorkspaceSucceeded) from the tuning Job and its pods."""
    if blocked:
        failed = Check(CONDITION_FALSE, R.JOB_FAILED, blocked)
        return failed, failed
    if job is None:
        waiting = Check(CONDITION_FALSE, R.WAITING_FOR_RESOURCE, "waiting for the GPU nodes before starting the job")
        return waiting, waiting
    status = job.get("status") or {}
    started = bool(status.get("startTime") or status.get("active") or status.get("succeeded")
                   or status.get("failed"))
    name = (job.get("metadata") or {}).get("name", "")
    start = (Check(CONDITION_TRUE, R.JOB_STARTED, f"tuning job {name} started") if started
             else Check(CONDITION_FALSE, R.JOB_PENDING, f"tuning job {name} created; waiting for it to start"))
    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet"):
        return start, Check(CONDITION_TRUE, R.JOB_SUCCEEDED, f"tuning job {name} completed")
    failed_cond = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if failed_cond is not None:
        why = _failure_from_pods(pods) or str(failed_cond.get("message") or failed_cond.get("reason") or "failed")
        return start, Check(CONDITION_FALSE, R.JOB_FAILED, f"tuning job {name} failed: {why}")
    problem = pod_problem(pods)
    if problem is not None:
        return start, Check(CONDITION_FALSE, R.JOB_FAILED, f"{problem[0]}: {problem[1]}")
    return start, Check(CONDITION_FALSE, R.PENDING, f"tuning job {name} is running")


def _state(obs: Observed) -> str:
    if obs.deleting:
        return WorkspaceState.DELETING
    if obs.invalid is not None:
        return WorkspaceState.FAILED
    resource = obs.resource
    if resource is not None and not resource.ok:
        if resource.reason in (R.INSUFFICIENT_CAPACITY, R.QUOTA_EXCEEDED, R.INSTANCE_TYPE_UNAVAILABLE,
                               R.PROVISIONING_FAILED):
            return WorkspaceState.FAILED
        if obs.workload is None and obs.job_succeeded is None:
            return WorkspaceState.PROVISIONING
    if obs.is_tuning:
        done, started = obs.job_succeeded, obs.job_started
        if done is not None and done.ok:
            return WorkspaceState.SUCCEEDED
        if done is not None and done.reason == R.JOB_FAILED:
            return WorkspaceState.FAILED
        if started is not None and started.ok:
            return WorkspaceState.RUNNING
        return WorkspaceState.PENDING if resource is None or resource.ok else WorkspaceState.PROVISIONING
    workload = obs.workload
    if workload is not None and workload.ok and (resource is None or resource.ok):
        return WorkspaceState.READY
    if workload is not None and workload.reason == R.INFERENCE_FAILED:
        return WorkspaceState.FAILED
    return WorkspaceState.DEPLOYING if resource is None or resource.ok else WorkspaceState.PROVISIONING


def compute_status(current: Mapping[str, Any] | None, obs: Observed, *, now: str | None = None) -> dict[str, Any]:
    """The new ``status`` (camelCase dict) from the current one and what was observed.

    lastTransitionTime moves only when a condition's status changes, so an unchanged
    world gives an equal status and nothing is written.
    """
    current = current or {}
    conditions = [Condition.model_validate(c) for c in current.get("conditions") or ()]
    gen = obs.generation

    def put(type_: str, check: Check) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, check.status, check.reason, check.message,
                                   observed_generation=gen, now=now)

    if obs.invalid is not None:
        put(T.WORKSPACE_READY, Check(CONDITION_FALSE, R.VALIDATION_FAILED, obs.invalid))
    else:
        if obs.resource is not None:
            put(T.RESOURCE_READY, obs.resource)
        resource_ok = obs.resource is not None and obs.resource.ok
        if obs.is_tuning:
            started = obs.job_started or Check(CONDITION_FALSE, R.WAITING_FOR_RESOURCE, "waiting for the GPU nodes")
            done = obs.job_succeeded or started
            put(T.JOB_STARTED, started)
            put(T.WORKSPACE_SUCCEEDED, done)
            ready = (Check(CONDITION_TRUE, R.SUCCEEDED, "the tuning job completed") if done.ok
                     else Check(CONDITION_FALSE, R.FAILED if done.reason == R.JOB_FAILED else R.PENDING,
                                done.message))
        else:
            workload = obs.workload or Check(CONDITION_FALSE, R.WAITING_FOR_RESOURCE,
                                             "waiting for the GPU nodes before deploying")
            put(T.INFERENCE_READY, workload)
            put(T.WORKSPACE_SUCCEEDED, workload)
            if resource_ok and workload.ok:
                ready = Check(CONDITION_TRUE, R.READY, "the model is deployed and serving")
            elif not resource_ok and obs.resource is not None:
                ready = Check(CONDITION_FALSE, R.PENDING, obs.resource.message)
            else:
                failed = workload.reason == R.INFERENCE_FAILED
                ready = Check(CONDITION_FALSE, R.FAILED if failed else R.PENDING, workload.message)
        put(T.WORKSPACE_READY, ready)
    status: dict[str, Any] = {k: v for k, v in current.items()
                              if k not in ("conditions", "state", "workerNodes")}
    status["conditions"] = [c.to_dict() for c in conditions]
    if obs.worker_nodes:
        status["workerNodes"] = sorted(obs.worker_nodes)
    status["state"] = _state(obs)
    if gen:
        status["observedGeneration"] = gen
    return status


def _comparable(status: Mapping[str, Any] | None) -> dict[str, Any]:
    status = dict(status or {})
    status["conditions"] = sorted((dict(c) for c in status.get("conditions") or ()), key=lambda c: c["type"])
    return status


def status_equal(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    return _comparable(old) == _comparable(new)


@dataclass(frozen=True)
class Transition:
    type: str
    status: str
    reason: str
    message: str


def transitions(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[Transition]:
    """Conditions whose status or reason changed (each gets an Event)."""
    before = {c.get("type"): c for c in (old or {}).get("conditions") or ()}
    out = []
    for cond in new.get("conditions") or ():
        prev = before.get(cond["type"])
        if prev is None or prev.get("status") != cond.get("status") or prev.get("reason") != cond.get("reason"):
            out.append(Transition(cond["type"], cond["status"], cond.get("reason", ""), cond.get("message", "")))
    return out


@dataclass(frozen=True)
class StatusEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


#: Turns to True that are a step a person waits for (one Event each); WorkspaceReady and, for
#: inference, WorkspaceSucceeded only repeat them.
_STEPS_INFERENCE = (T.RESOURCE_READY, T.INFERENCE_READY)
_STEPS_TUNING = (T.RESOURCE_READY, T.JOB_STARTED, T.WORKSPACE_SUCCEEDED)


def status_events(old: Mapping[str, Any] | None, new: Mapping[str, Any], *,
                  warnings: Iterable[str]) -> list[StatusEvent]:
    """The Events a status change deserves, one per fact a person cares about:

    * a condition turning False with a failure reason: a Warning, always (once per message: the
      summary conditions repeat the one that failed);
    * a step turning True: ResourceReady after a wait (nodes ready; not for nodes that were ready
      before the Workspace came), InferenceReady (serving), JobStarted and the tuning's success;
    * a step falling back from True (a node lost, replicas gone): a Normal Event naming why.

    Waiting and progress (Pending, Deploying, ProvisioningNodes) get none: the conditions say it.
    """
    warn = set(warnings)
    before = {c.get("type"): c for c in (old or {}).get("conditions") or ()}
    tuning = any(c.get("type") == T.JOB_STARTED for c in new.get("conditions") or ())
    steps = _STEPS_TUNING if tuning else _STEPS_INFERENCE
    out: list[StatusEvent] = []
    said: set[str] = set()
    for change in transitions(old, new):
        prev = before.get(change.type)
        if change.status == CONDITION_FALSE and change.reason in warn:
            if change.message not in said:
                said.add(change.message)
                out.append(StatusEvent("Warning", change.reason, f"{change.type} is False: {change.message}"))
        elif change.type not in steps:
            continue
        elif change.status == CONDITION_TRUE and (change.type != T.RESOURCE_READY or prev is not None):
            out.append(StatusEvent("Normal", change.reason or change.type, f"{change.type} is True: {change.message}"))
        elif change.status != CONDITION_TRUE and prev is not None and prev.get("status") == CONDITION_TRUE:
            out.append(StatusEvent("Normal", change.reason or change.type,
                                   f"{change.type} is {change.status}: {change.message}"))
    return out
