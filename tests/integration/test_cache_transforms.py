"""The operator's cache keeps only what its readers read of Nodes and Pods, on a real API server:
what LIST and WATCH bring is trimmed before it is stored, and the readers answer as on the whole
objects the server holds."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kaito_core.controllers.cached_fields import keep_read_fields
from kaito_core.controllers.workspace.status import pod_problem
from kaito_core.engine import NODE, POD, SERVICEACCOUNT, ApiClientTransport, Client, SharedCache, keep_fields
from kaito_core.provisioning import allocatable_gpus, node_problem
from kaito_core.testing import ControlPlane

NS = "transforms"
LABEL = "kaito.sh/workspace"


@pytest.fixture
async def client(light_control_plane: ControlPlane) -> AsyncIterator[Client]:
    api = Client(await ApiClientTransport.from_kubeconfig(light_control_plane.kubeconfig))
    light_control_plane.kubectl("create", "namespace", NS)
    try:
        yield api
    finally:
        await api.close()


def _conditions(ready: str, beat: str) -> list[dict[str, Any]]:
    return [{"type": "Ready", "status": ready, "reason": "KubeletReady", "message": "kubelet is posting ready status",
             "lastHeartbeatTime": beat, "lastTransitionTime": "2026-01-01T00:00:00Z"}]


async def _node(client: Client, ready: str, beat: str) -> None:
    status = {"capacity": {"nvidia.com/gpu": "1", "cpu": "24"}, "allocatable": {"nvidia.com/gpu": "1", "cpu": "24"},
              "conditions": _conditions(ready, beat),
              "nodeInfo": {"kubeletVersion": "v1.37.2", "machineID": "m" * 32, "systemUUID": "s", "bootID": "b",
                           "kernelVersion": "6.8", "osImage": "Ubuntu", "containerRuntimeVersion": "containerd://2",
                           "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
              "images": [{"names": [f"registry.example/image-{i}:latest"], "sizeBytes": i + 1} for i in range(30)]}
    await client.patch_status(NODE, "gpu-0", {"status": status})


async def test_the_cache_keeps_what_the_readers_read(client: Client) -> None:
    await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-0", "labels": {"a": "b"}},
                         "spec": {"providerID": "kwok://gpu-0", "podCIDR": "10.0.0.0/24",
                                  "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]}}, kind=NODE)
    await _node(client, "True", "2026-01-01T00:00:10Z")
    # (no controller-manager here to make the namespace's default ServiceAccount)
    await client.create({"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": "default", "namespace": NS}}, kind=SERVICEACCOUNT)
    await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ws-0", "namespace": NS,
                                                                          "labels": {LABEL: "ws"}},
                         "spec": {"nodeName": "gpu-0", "containers": [
                             {"name": "ws", "image": "registry.example/phi:1",
                              "env": [{"name": f"V{i}", "value": "x" * 30} for i in range(10)]}]}}, kind=POD)
    await client.patch_status(POD, "ws-0", {"status": {"phase": "Running", "hostIP": "10.1.2.3", "containerStatuses": [
        {"name": "ws", "image": "registry.example/phi:1", "imageID": "", "ready": False, "restartCount": 4,
         "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
         "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}}, NS)

    cache = SharedCache(client)
    keep_read_fields(cache)
    nodes, pods = cache.informer(NODE), cache.informer(POD, label_selector=LABEL)
    await cache.start()
    try:
        assert await cache.wait_for_sync(30)
        node, pod = cache.get(NODE, None, "gpu-0"), cache.get(POD, NS, "ws-0")
        assert node is not None and pod is not None
        whole_node, whole_pod = await client.get(NODE, "gpu-0"), await client.get(POD, "ws-0", NS)
        assert "images" in whole_node["status"] and "nodeInfo" in whole_node["status"]
        assert set(node["status"]) == {"capacity", "allocatable", "conditions"}
        assert "spec" not in pod and "hostIP" not in pod["status"] and "spec" in whole_pod
        assert node["metadata"]["resourceVersion"] == whole_node["metadata"]["resourceVersion"]
        # (the API server's admission adds node.kubernetes.io/not-ready until a node controller drops it)
        assert node_problem(node, gpus=1) == node_problem(whole_node, gpus=1) is not None
        assert node_problem(node, gpus=1, settled=False) == node_problem(whole_node, gpus=1, settled=False) is None
        assert allocatable_gpus(node) == allocatable_gpus(whole_node) == 1
        problem = pod_problem([pod])
        assert problem == pod_problem([whole_pod]) and problem is not None and "OOMKilled" in problem[1]

        # What WATCH brings is trimmed too: the node goes NotReady.
        await _node(client, "False", "2026-01-01T00:01:00Z")
        def cached_ready() -> bool:
            return node_problem(cache.get(NODE, None, "gpu-0", copy=False) or {}, gpus=1, settled=False) is None

        async with asyncio.timeout(30):
            while cached_ready():  # noqa: ASYNC110 - polling the cache is the point
                await asyncio.sleep(0.05)
        watched = cache.get(NODE, None, "gpu-0")
        assert watched is not None and set(watched["status"]) == {"capacity", "allocatable", "conditions"}
        assert "lastHeartbeatTime" not in watched["status"]["conditions"][0]

        # Once filled, a kind's cache cannot change what it keeps (its objects are trimmed already).
        fresh = SharedCache(client)
        fresh.informer(NODE)
        await fresh.start()
        try:
            with pytest.raises(RuntimeError, match="already filled; set its transform before"):
                fresh.set_transform(NODE, keep_fields("metadata"))
        finally:
            await fresh.stop()
        assert nodes.store.get(None, "gpu-0", copy=False) is not None and len(pods.store) == 1
        assert copy.deepcopy(watched) == watched
    finally:
        await cache.stop()
