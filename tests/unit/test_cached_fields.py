"""The cache keeps of Pods and Nodes only what the reconcilers read: every reader answers the same
on the transformed object as on the whole one (so a field a reader starts to need fails here)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from kaito_core.controllers.cached_fields import CACHE_TRANSFORMS, CACHED_FIELDS, keep_read_fields
from kaito_core.controllers.machine.watches import node_machine_index, node_provider_id_index
from kaito_core.controllers.workspace import node_facts_changed, pod_to_workspace
from kaito_core.controllers.workspace.status import inference_check, job_checks, pod_problem
from kaito_core.engine import DEPLOYMENT, JOB, NODE, POD, STATEFULSET, not_just_a_heartbeat
from kaito_core.engine.indexers import controller_uid_index, label_pair_index, owner_uid_index
from kaito_core.provisioning import allocatable_gpus, node_is_ready, node_problem
from kaito_core.provisioning.nodes import ephemeral_taints


def _condition(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": "2026-01-01T00:00:10Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}


def a_node(*, ready: str = "True", gpus: str = "1", taints: list[dict[str, Any]] | None = None,
           unschedulable: bool = False, deleting: bool = False) -> dict[str, Any]:
    """A Node as a kubelet (or kwok) posts it: most of it is what no reconciler reads."""
    metadata: dict[str, Any] = {
        "name": "gpu-0", "uid": "n-1", "resourceVersion": "42", "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"kaito.sh/machine": "ws-0", "node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4",
                   "kubernetes.io/hostname": "gpu-0"},
        "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
        "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    spec: dict[str, Any] = {"providerID": "kwok://gpu-0", "podCIDR": "10.0.0.0/24", "podCIDRs": ["10.0.0.0/24"],
                            "taints": taints if taints is not None else [
                                {"key": "sku", "value": "gpu", "effect": "NoSchedule"}]}
    if unschedulable:
        spec["unschedulable"] = True
    resources = {"cpu": "24", "memory": "220Gi", "pods": "110", "nvidia.com/gpu": gpus}
    return {
        "apiVersion": "v1", "kind": "Node", "metadata": metadata, "spec": spec,
        "status": {
            "capacity": dict(resources), "allocatable": dict(resources),
            "conditions": [_condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                           _condition("Ready", ready, "KubeletReady" if ready == "True" else "KubeletNotReady",
                                      "kubelet is posting ready status" if ready == "True" else "PLEG is not healthy")],
            "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}, {"type": "Hostname", "address": "gpu-0"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"architecture": "amd64", "kubeletVersion": "v1.37.2", "osImage": "Ubuntu 24.04",
                         "machineID": "x" * 32, "systemUUID": "y" * 36, "bootID": "z" * 36,
                         "containerRuntimeVersion": "containerd://2.1.0", "kernelVersion": "6.8.0",
                         "kubeProxyVersion": "", "operatingSystem": "linux"},
            "images": [{"names": [f"mcr.microsoft.com/aks/kaito/image-{i}@sha256:{'a' * 64}"],
                        "sizeBytes": 1_000_000 * i} for i in range(20)],
        },
    }


def _container_status(name: str, state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "state": state, "lastState": last or {}, "ready": "running" in state,
            "restartCount": 3, "started": "running" in state, "image": "mcr.microsoft.com/aks/kaito/phi-4:0.1",
            "imageID": f"sha256:{'b' * 64}", "containerID": f"containerd://{'c' * 64}",
            "volumeMounts": [{"name": "weights", "mountPath": "/workspace/weights"}],
            "resources": {"limits": {"nvidia.com/gpu": "1"}}, "user": {"linux": {"uid": 0, "gid": 0}}}


def a_pod(name: str, *, statuses: list[dict[str, Any]] | None = None,
          init_statuses: list[dict[str, Any]] | None = None, conditions: list[dict[str, Any]] | None = None,
          phase: str = "Running", reason: str | None = None, message: str | None = None,
          deleting: bool = False) -> dict[str, Any]:
    """A Workspace's inference Pod with its spec and status as the API server answers them."""
    metadata: dict[str, Any] = {
        "name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "7",
        "labels": {"kaito.sh/workspace": "ws", "pod-template-hash": "abc"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "ws-abc", "uid": "rs-1",
                             "controller": True, "blockOwnerDeletion": True}],
        "managedFields": [{"manager": "kube-controller-manager"}]}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    status: dict[str, Any] = {
        "phase": phase, "hostIP": "10.1.2.3", "podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.9"}],
        "qosClass": "Burstable", "startTime": "2026-01-01T00:00:00Z",
        "conditions": conditions if conditions is not None else [_condition("PodScheduled", "True")],
        "containerStatuses": statuses if statuses is not None else [
            _container_status("ws", {"running": {"startedAt": "2026-01-01T00:00:05Z"}})],
    }
    if init_statuses is not None:
        status["initContainerStatuses"] = init_statuses
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"nodeName": "gpu-0", "containers": [{
            "name": "ws", "image": "mcr.microsoft.com/aks/kaito/phi-4:0.1",
            "command": ["/bin/sh", "-c", "python3 /workspace/tfs/inference_api.py --pipeline text-generation"],
            "env": [{"name": f"VAR_{i}", "value": "v" * 40} for i in range(12)],
            "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
            "readinessProbe": {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 10},
            "volumeMounts": [{"name": "weights", "mountPath": "/workspace/weights"}]}],
            "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
            "volumes": [{"name": "weights", "emptyDir": {}}]},
        "status": status,
    }


WAITING_PULL = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
CRASH = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}}
OOM = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
FAILED = {"terminated": {"reason": "Error", "exitCode": 3, "message": "weights digest mismatch"}}

PODS: dict[str, dict[str, Any]] = {
    "running": a_pod("p-running"),
    "image-pull": a_pod("p-pull", statuses=[_container_status("ws", WAITING_PULL)], phase="Pending"),
    "crash-loop": a_pod("p-crash", statuses=[_container_status("ws", CRASH, FAILED)]),
    "oom": a_pod("p-oom", statuses=[_container_status("ws", CRASH, OOM)]),
    "init-failed": a_pod("p-init", init_statuses=[_container_status("weights", FAILED)], phase="Pending",
                         statuses=[_container_status("ws", {"waiting": {"reason": "PodInitializing"}})]),
    "unschedulable": a_pod("p-unsched", statuses=[], phase="Pending", conditions=[
        _condition("PodScheduled", "False", "Unschedulable", "0/3 nodes are available: insufficient nvidia.com/gpu")]),
    "evicted": a_pod("p-evicted", statuses=[], phase="Failed", reason="Evicted",
                     message="The node was low on resource: memory."),
    "deleting": a_pod("p-deleting", statuses=[_container_status("ws", CRASH, OOM)], deleting=True),
}

NODES: dict[str, dict[str, Any]] = {
    "ready": a_node(),
    "not-ready": a_node(ready="False"),
    "no-gpus": a_node(gpus="0"),
    "not-yet": a_node(taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]),
    "cordoned": a_node(unschedulable=True),
    "deleting": a_node(deleting=True),
}

NOT_READY_DEPLOYMENT = {"kind": "Deployment", "metadata": {"name": "ws", "generation": 2},
                        "spec": {"replicas": 1}, "status": {"observedGeneration": 2, "replicas": 1}}
FAILED_JOB = {"kind": "Job", "metadata": {"name": "ws"}, "status": {
    "startTime": "2026-01-01T00:00:00Z", "failed": 1,
    "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}


def trimmed(kind: Any, obj: dict[str, Any]) -> dict[str, Any]:
    return CACHE_TRANSFORMS[kind](copy.deepcopy(obj))


NODE_READERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "node_problem": lambda n: node_problem(n, gpus=1),
    "node_problem unsettled": lambda n: node_problem(n, gpus=None, settled=False),
    "node_is_ready": node_is_ready,
    "allocatable_gpus": allocatable_gpus,
    "ephemeral_taints": ephemeral_taints,
    "provider-id index": lambda n: list(node_provider_id_index(n)),
    "machine index": lambda n: list(node_machine_index(n)),
    "label index": lambda n: sorted(label_pair_index(n)),
    "capacity and allocatable (copied to the Machine)": lambda n: (n["status"]["capacity"],
                                                                   n["status"]["allocatable"]),
    "taints and cordon (synced, termination)": lambda n: (n["spec"].get("taints"), n["spec"].get("unschedulable")),
    "metadata": lambda n: {k: v for k, v in n["metadata"].items() if k != "managedFields"},
}

POD_READERS: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
    "pod_problem": pod_problem,
    "inference_check": lambda pods: inference_check(NOT_READY_DEPLOYMENT, pods),
    "job_checks": lambda pods: job_checks(FAILED_JOB, pods),
    "pod_to_workspace": lambda pods: [list(pod_to_workspace(p)) for p in pods],
    "owner indexes": lambda pods: [(list(owner_uid_index(p)), list(controller_uid_index(p))) for p in pods],
}


@pytest.mark.parametrize("reader", NODE_READERS)
@pytest.mark.parametrize("state", NODES)
def test_node_readers_answer_the_same_on_the_cached_node(state: str, reader: str) -> None:
    node = NODES[state]
    assert NODE_READERS[reader](trimmed(NODE, node)) == NODE_READERS[reader](node)


@pytest.mark.parametrize("reader", POD_READERS)
@pytest.mark.parametrize("state", PODS)
def test_pod_readers_answer_the_same_on_the_cached_pods(state: str, reader: str) -> None:
    pods = [PODS[state]]
    assert POD_READERS[reader]([trimmed(POD, p) for p in pods]) == POD_READERS[reader](pods)


def test_the_fixtures_reach_every_branch_the_readers_have() -> None:
    """The equalities above mean something only if the readers say something about these objects."""
    problems = {state: pod_problem([pod]) for state, pod in PODS.items()}
    assert problems["running"] is None and problems["deleting"] is None
    assert problems["image-pull"] and problems["image-pull"][0] == "ImagePullBackOff"
    assert problems["crash-loop"] and "weights digest mismatch" in problems["crash-loop"][1]
    assert problems["oom"] and "(last exit: OOMKilled)" in problems["oom"][1]
    assert problems["init-failed"] and "weights digest mismatch" in problems["init-failed"][1]
    assert problems["unschedulable"] and "insufficient nvidia.com/gpu" in problems["unschedulable"][1]
    assert "Evicted" in job_checks(FAILED_JOB, [PODS["evicted"]])[1].message
    checks = {state: node_problem(node, gpus=1) for state, node in NODES.items()}
    assert checks["ready"] is None
    assert all(checks[state] is not None for state in NODES if state != "ready")


def test_node_predicates_see_the_same_changes() -> None:
    node = NODES["ready"]
    heartbeat = copy.deepcopy(node)
    heartbeat["metadata"]["resourceVersion"] = "43"
    for cond in heartbeat["status"]["conditions"]:
        cond["lastHeartbeatTime"] = "2026-01-01T00:05:00Z"
    for old, new in ((node, heartbeat), (node, NODES["not-ready"]), (node, NODES["not-yet"]),
                     (node, NODES["cordoned"]), (node, NODES["no-gpus"])):
        for predicate in (node_facts_changed, not_just_a_heartbeat):
            assert predicate.update(trimmed(NODE, old), trimmed(NODE, new)) == predicate.update(old, new), (
                predicate.name, new["status"]["conditions"][1]["status"])
    # A heartbeat is no news on the cached objects either.
    assert not not_just_a_heartbeat.update(trimmed(NODE, node), trimmed(NODE, heartbeat))


def test_what_the_cache_drops() -> None:
    node, pod = trimmed(NODE, NODES["ready"]), trimmed(POD, PODS["crash-loop"])
    assert set(node["status"]) == {"capacity", "allocatable", "conditions"}
    assert "lastHeartbeatTime" not in node["status"]["conditions"][0]
    assert set(node["spec"]) == {"providerID", "taints"}
    assert "spec" not in pod and "managedFields" not in pod["metadata"]
    assert set(pod["status"]["containerStatuses"][0]) == {"name", "state", "lastState"}
    for kind, whole, cached in ((NODE, NODES["ready"], node), (POD, PODS["crash-loop"], pod)):
        assert cached["apiVersion"] == whole["apiVersion"] and cached["kind"] == whole["kind"], kind
        # A kubelet's Node and a Workspace's Pod are mostly what nobody reads.
        assert len(json.dumps(cached)) < 0.4 * len(json.dumps(whole)), kind


def a_workload(kind: str, *, ready: int, updated: int, generation: int = 2, observed: int = 2,
               revisions: tuple[str, str] = ("r1", "r1")) -> dict[str, Any]:
    """A Deployment or StatefulSet as applied (its pod template is most of it) with a status."""
    template = PODS["running"]["spec"]
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": "ws", "namespace": "default", "generation": generation, "resourceVersion": "9",
                         "annotations": {"kaito.sh/applied-hash": "abc"},
                         "ownerReferences": [{"kind": "Workspace", "name": "ws", "uid": "ws-1", "controller": True}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"kaito.sh/workspace": "ws"}},
                     "template": {"metadata": {"labels": {"kaito.sh/workspace": "ws"}}, "spec": template}},
            "status": {"observedGeneration": observed, "replicas": 2, "readyReplicas": ready,
                       "updatedReplicas": updated, "currentRevision": revisions[0], "updateRevision": revisions[1]}}


WORKLOADS = {
    "ready": a_workload("Deployment", ready=2, updated=2),
    "rolling": a_workload("Deployment", ready=2, updated=1),
    "stale": a_workload("Deployment", ready=2, updated=2, observed=1),
    "not ready": a_workload("Deployment", ready=1, updated=2),
    "set ready": a_workload("StatefulSet", ready=2, updated=0),
    "set rolling": a_workload("StatefulSet", ready=2, updated=0, revisions=("r1", "r2")),
}
JOBS = {
    "running": {**FAILED_JOB, "metadata": {"name": "ws", "annotations": {"kaito.sh/tuning-hash": "t"}},
                "spec": {"template": {"spec": PODS["running"]["spec"]}}, "status": {"active": 1}},
    "complete": {**FAILED_JOB, "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
    "failed": {**FAILED_JOB, "spec": {"template": {"spec": PODS["running"]["spec"]}}},
}


@pytest.mark.parametrize("state", WORKLOADS)
def test_workload_readers_answer_the_same_on_the_cached_workload(state: str) -> None:
    workload = WORKLOADS[state]
    kind = STATEFULSET if workload["kind"] == "StatefulSet" else DEPLOYMENT
    cached = trimmed(kind, workload)
    assert "template" not in cached["spec"]
    pods = [PODS["crash-loop"]]
    assert inference_check(cached, pods) == inference_check(workload, pods)
    assert cached["metadata"] == workload["metadata"]  # the applied hash, the owner


@pytest.mark.parametrize("state", JOBS)
def test_job_readers_answer_the_same_on_the_cached_job(state: str) -> None:
    job = JOBS[state]
    cached = trimmed(JOB, job)
    assert "spec" not in cached or "template" not in cached["spec"]
    assert job_checks(cached, [PODS["evicted"]]) == job_checks(job, [PODS["evicted"]])
    assert cached["metadata"] == job["metadata"]


def test_the_workload_fixtures_reach_every_branch() -> None:
    answers = {state: inference_check(w, []).status for state, w in WORKLOADS.items()}
    assert answers == {"ready": "True", "rolling": "False", "stale": "False", "not ready": "False",
                       "set ready": "True", "set rolling": "False"}
    assert {state: job_checks(j, [])[1].reason for state, j in JOBS.items()} == {
        "running": "Pending", "complete": "JobSucceeded", "failed": "JobFailed"}
    assert job_checks(JOBS["running"], [])[0].reason == "JobStarted"


def test_one_declaration_per_kind() -> None:
    assert set(CACHED_FIELDS) == {NODE, POD, DEPLOYMENT, STATEFULSET, JOB}
    assert all(paths[0] == "metadata" for paths in CACHED_FIELDS.values())


async def test_every_controller_declares_the_same_transform(tmp_path: Any) -> None:
    from kaito_core.engine import ApiClientTransport, Client, SharedCache

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    client = Client(await ApiClientTransport.from_kubeconfig(kubeconfig))
    try:
        cache = SharedCache(client)
        node_informer = cache.informer(NODE)  # made before the declaration: it gets the transform too
        keep_read_fields(cache)
        keep_read_fields(cache)  # the Machine and the Workspace controller both declare it
        assert node_informer.transform is CACHE_TRANSFORMS[NODE]
        assert cache.informer(POD, label_selector="kaito.sh/workspace").transform is CACHE_TRANSFORMS[POD]
    finally:
        await client.close()
