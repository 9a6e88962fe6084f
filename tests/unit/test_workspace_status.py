"""Workspace controller, pure parts: conditions computed from observed objects."""

from __future__ import annotations

from typing import Any

from kaito_core.controllers.workspace.status import (
    Check,
    Observed,
    compute_status,
    inference_check,
    job_checks,
    pod_problem,
    status_equal,
    transitions,
)

OK = Check("True", "NodesReady", "1 GPU node(s) ready: n0")


def deployment(*, replicas: int = 1, ready: int = 1, updated: int = 1, current: int = 1, gen: int = 1,
               observed: int = 1) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": "w", "generation": gen}, "spec": {"replicas": replicas},
            "status": {"readyReplicas": ready, "updatedReplicas": updated, "replicas": current,
                       "observedGeneration": observed}}


def pod(name: str = "w-1", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"name": "w", "state": {"waiting": {"reason": reason, "message": message}}}


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_inference_ready_needs_all_replicas_updated_and_ready() -> None:
    assert inference_check(deployment(), []).ok
    assert not inference_check(deployment(ready=0), []).ok
    assert not inference_check(deployment(gen=2, observed=1), []).ok  # a new template not yet seen
    assert not inference_check(deployment(current=2), []).ok  # an old pod still around
    assert inference_check(None, []).reason == "WaitingForResource"
    assert inference_check(deployment(), [], blocked="ConfigMap x not found").reason == "InferenceFailed"


def test_pod_problems_surface_in_the_message() -> None:
    for reason in ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull"):
        check = inference_check(deployment(ready=0), [pod(containerStatuses=[waiting(reason, "boom")])])
        assert check.reason == "InferenceFailed" and reason in check.message and "boom" in check.message
    oom = {"name": "w", "state": {"running": {}}, "lastState": {"terminated": {"reason": "OOMKilled"}}}
    check = inference_check(deployment(ready=0), [pod(containerStatuses=[oom])])
    assert "OOMKilled" in check.message
    unschedulable = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/3 nodes are available"}])
    problem = pod_problem([unschedulable])
    assert problem is not None and problem[0] == "Unschedulable"
    assert pod_problem([pod(containerStatuses=[{"name": "w", "state": {"running": {}}}])]) is None


def test_job_checks_follow_the_job() -> None:
    started, done = job_checks(None, [])
    assert not started.ok and not done.ok
    job: dict[str, Any] = {"metadata": {"name": "t"}, "status": {}}
    started, done = job_checks(job, [])
    assert started.reason == "JobPending"
    job["status"] = {"startTime": "2026-01-01T00:00:00Z", "active": 1}
    started, done = job_checks(job, [])
    assert started.ok and not done.ok and done.reason == "Pending"
    job["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    started, done = job_checks(job, [])
    assert started.ok and done.ok and done.reason == "JobSucceeded"
    job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
    failed_pod = pod("t-x", phase="Failed", containerStatuses=[
        {"name": "tuning", "state": {"terminated": {"exitCode": 3, "reason": "Error", "message": "CUDA OOM"}}}])
    started, done = job_checks(job, [failed_pod])
    assert done.reason == "JobFailed" and "exited with 3" in done.message and "CUDA OOM" in done.message


def test_compute_status_inference() -> None:
    obs = Observed(generation=2, resource=OK, workload=inference_check(deployment(), []), worker_nodes=["n0"])
    status = compute_status({}, obs, now="2026-01-01T00:00:00Z")
    for type_ in ("ResourceReady", "InferenceReady", "WorkspaceSucceeded", "WorkspaceReady"):
        assert cond(status, type_)["status"] == "True", type_
        assert cond(status, type_)["observedGeneration"] == 2
    assert status["state"] == "Ready" and status["workerNodes"] == ["n0"]
    assert not any(c["type"] == "JobStarted" for c in status["conditions"])
    # Nothing changed: equal, and the transition time is kept.
    again = compute_status(status, obs, now="2026-02-02T00:00:00Z")
    assert status_equal(status, again) and transitions(status, again) == []
    # The workload breaks: WorkspaceReady False with the reason, one transition each.
    bad = Observed(generation=2, resource=OK, worker_nodes=["n0"],
                   workload=inference_check(deployment(ready=0),
                                            [pod(containerStatuses=[waiting("CrashLoopBackOff")])]))
    broken = compute_status(status, bad, now="2026-03-03T00:00:00Z")
    assert cond(broken, "WorkspaceReady")["status"] == "False" and broken["state"] == "Failed"
    assert cond(broken, "ResourceReady")["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert cond(broken, "InferenceReady")["lastTransitionTime"] == "2026-03-03T00:00:00Z"
    assert {t.type for t in transitions(status, broken)} == {"InferenceReady", "WorkspaceSucceeded", "WorkspaceReady"}


def test_compute_status_waiting_for_nodes() -> None:
    obs = Observed(resource=Check("False", "ProvisioningNodes", "provisioning 1 GPU node(s): 1 to create"))
    status = compute_status(None, obs)
    assert cond(status, "WorkspaceReady")["message"].startswith("provisioning")
    assert status["state"] == "Provisioning"


def test_compute_status_tuning() -> None:
    job = {"metadata": {"name": "t"},
           "status": {"startTime": "x", "conditions": [{"type": "Complete", "status": "True"}]}}
    started, done = job_checks(job, [])
    status = compute_status({}, Observed(is_tuning=True, resource=OK, job_started=started, job_succeeded=done))
    assert cond(status, "JobStarted")["status"] == "True"
    assert cond(status, "WorkspaceSucceeded")["status"] == "True"
    assert cond(status, "WorkspaceReady")["status"] == "True"
    assert status["state"] == "Succeeded"
    assert not any(c["type"] == "InferenceReady" for c in status["conditions"])


def test_compute_status_invalid() -> None:
    status = compute_status({}, Observed(generation=1, invalid="inference.preset.name: unknown preset 'x'"))
    ready = cond(status, "WorkspaceReady")
    assert ready["status"] == "False" and ready["reason"] == "ValidationFailed"
    assert "unknown preset" in ready["message"] and status["state"] == "Failed"
