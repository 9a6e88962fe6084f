"""The foundation: a real control plane built here behaves like Kubernetes.

Each test talks to the session's full control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok) through kubernetes_asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kubernetes_asyncio import client, watch

from kaito_core.testing import GPU_RESOURCE, GPU_TAINT, KUBERNETES_VERSION, eventually


async def test_version_is_the_pinned_release(kube_api: client.ApiClient) -> None:
    info = await client.VersionApi(kube_api).get_code(_request_timeout=10)
    assert info.git_version == KUBERNETES_VERSION


async def test_configmap_create_get_list_watch(kube_api: client.ApiClient, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    listed = await core.list_namespaced_config_map(kube_namespace, _request_timeout=10)
    events: list[tuple[str, str]] = []

    async def watch_two() -> None:
        stream = watch.Watch().stream(
            core.list_namespaced_config_map,
            kube_namespace,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=30,
        )
        async for event in stream:
            name = event["object"].metadata.name
            if name.startswith("cm-"):
                events.append((event["type"], name))
            if len(events) == 2:
                break

    watcher = asyncio.create_task(watch_two())
    await core.create_namespaced_config_map(
        kube_namespace, {"metadata": {"name": "cm-a"}, "data": {"k": "v"}}
    )
    await core.patch_namespaced_config_map("cm-a", kube_namespace, {"data": {"k": "w"}})
    await asyncio.wait_for(watcher, 30)
    assert events == [("ADDED", "cm-a"), ("MODIFIED", "cm-a")]

    got = await core.read_namespaced_config_map("cm-a", kube_namespace)
    assert got.data == {"k": "w"}
    names = {cm.metadata.name for cm in (await core.list_namespaced_config_map(kube_namespace)).items}
    assert "cm-a" in names


async def test_install_crd_and_watch_its_objects(kube_api: client.ApiClient, kube_namespace: str) -> None:
    ext = client.ApiextensionsV1Api(kube_api)
    group, plural = "widgets.test.kaito.sh", "widgets"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"size": {"type": "integer", "minimum": 1}},
                        }
                    },
                }
            ],
        },
    }
    try:
        await ext.create_custom_resource_definition(crd)
    except client.ApiException as exc:
        if exc.status != 409:
            raise

    async def established() -> bool:
        got = await ext.read_custom_resource_definition(f"{plural}.{group}")
        return any(c.type == "Established" and c.status == "True" for c in got.status.conditions or [])

    await eventually(established, 30, message="the CRD to be Established")
    custom = client.CustomObjectsApi(kube_api)
    seen: list[str] = []

    async def watch_one() -> None:
        # Right after a CRD is Established its storage may still be initializing: the
        # apiserver answers 429 with Retry-After, and a well-behaved client retries.
        while True:
            try:
                async for event in watch.Watch().stream(
                    custom.list_namespaced_custom_object, group, "v1", kube_namespace, plural, timeout_seconds=30
                ):
                    seen.append(event["object"]["metadata"]["name"])
                    return
            except client.ApiException as exc:
                if exc.status != 429:
                    raise
                await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_one())
    await asyncio.sleep(0.3)
    body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"}, "size": 3}
    await custom.create_namespaced_custom_object(group, "v1", kube_namespace, plural, body)
    await asyncio.wait_for(watcher, 30)
    assert seen == ["w1"]
    # The schema is enforced by the real apiserver.
    with pytest.raises(client.ApiException) as rejected:
        await custom.create_namespaced_custom_object(
            group, "v1", kube_namespace, plural, {**body, "metadata": {"name": "w2"}, "size": 0}
        )
    assert rejected.value.status == 422


async def test_kwok_gpu_node_goes_ready(make_gpu_node: Callable[..., Awaitable[Any]]) -> None:
    node = await make_gpu_node(instance_type="Standard_NC6s_v3", gpus=1)
    assert node.status.allocatable[GPU_RESOURCE] == "1"
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def _gpu_pod_spec(node_name: str) -> dict[str, Any]:
    return {
        "containers": [
            {
                "name": "model",
                "image": "example.invalid/model:1",
                "resources": {"limits": {GPU_RESOURCE: "1"}, "requests": {GPU_RESOURCE: "1"}},
            }
        ],
        "tolerations": [
            {
                "key": GPU_TAINT["key"],
                "operator": "Equal",
                "value": GPU_TAINT["value"],
                "effect": GPU_TAINT["effect"],
            }
        ],
        "nodeSelector": {"kubernetes.io/hostname": node_name},
    }


async def test_gpu_deployment_pod_scheduled_and_running(
    kube_api: client.ApiClient, kube_namespace: str, make_gpu_node: Callable[..., Awaitable[Any]]
) -> None:
    node = await make_gpu_node(gpus=1)
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    labels = {"app": "gpu-model"}
    await apps.create_namespaced_deployment(
        kube_namespace,
        {
            "metadata": {"name": "gpu-model"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": _gpu_pod_spec(node.metadata.name)},
            },
        },
    )

    async def running_pod() -> Any:
        pods = await core.list_namespaced_pod(kube_namespace, label_selector="app=gpu-model")
        return next((p for p in pods.items if p.status.phase == "Running"), None)

    pod = await eventually(running_pod, 90, message="the GPU pod to run on the kwok node")
    assert pod.spec.node_name == node.metadata.name

    async def deployment_available() -> bool:
        dep = await apps.read_namespaced_deployment("gpu-model", kube_namespace)
        return (dep.status.available_replicas or 0) == 1

    await eventually(deployment_available, 60, message="the Deployment to report 1 available replica")


async def test_gpu_pod_without_toleration_stays_pending(
    kube_api: client.ApiClient, kube_namespace: str, make_gpu_node: Callable[..., Awaitable[Any]]
) -> None:
    node = await make_gpu_node(gpus=1)
    core = client.CoreV1Api(kube_api)
    spec = _gpu_pod_spec(node.metadata.name)
    del spec["tolerations"]
    await core.create_namespaced_pod(kube_namespace, {"metadata": {"name": "untolerated"}, "spec": spec})

    async def unschedulable() -> bool:
        pod = await core.read_namespaced_pod("untolerated", kube_namespace)
        return any(c.type == "PodScheduled" and c.status == "False" for c in pod.status.conditions or [])

    await eventually(unschedulable, 60, message="the scheduler to refuse the tainted node")
    pod = await core.read_namespaced_pod("untolerated", kube_namespace)
    assert pod.spec.node_name is None


async def test_job_pod_completes_and_job_succeeds(
    kube_api: client.ApiClient, kube_namespace: str, make_gpu_node: Callable[..., Awaitable[Any]]
) -> None:
    node = await make_gpu_node(gpus=1)
    batch = client.BatchV1Api(kube_api)
    spec = _gpu_pod_spec(node.metadata.name) | {"restartPolicy": "Never"}
    await batch.create_namespaced_job(
        kube_namespace,
        {
            "metadata": {"name": "tune"},
            "spec": {"backoffLimit": 0, "template": {"spec": spec}},
        },
    )

    async def succeeded() -> bool:
        job = await batch.read_namespaced_job("tune", kube_namespace)
        return (job.status.succeeded or 0) == 1 and any(
            c.type == "Complete" and c.status == "True" for c in job.status.conditions or []
        )

    await eventually(succeeded, 90, message="the Job to complete")


async def test_deleting_owner_garbage_collects_child(kube_api: client.ApiClient, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    owner = await core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "owner"}})
    await core.create_namespaced_config_map(
        kube_namespace,
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner.metadata.uid,
                        "controller": True,
                    }
                ],
            }
        },
    )
    await core.delete_namespaced_config_map("owner", kube_namespace)

    async def child_gone() -> bool:
        try:
            await core.read_namespaced_config_map("child", kube_namespace)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    await eventually(child_gone, 60, message="the garbage collector to delete the child")


async def test_namespace_finishes_deleting(kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "doomed"}})
    await core.create_namespaced_config_map("doomed", {"metadata": {"name": "cm"}})
    await core.delete_namespace("doomed")

    async def gone() -> bool:
        try:
            await core.read_namespace("doomed")
        except client.ApiException as exc:
            return exc.status == 404
        return False

    await eventually(gone, 90, message="the namespace controller to finish deleting 'doomed'")
