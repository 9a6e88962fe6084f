"""Simulated GPU nodes: Node objects that kwok marks Ready and whose pods it runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubernetes_asyncio import client

# The one exception to "testing depends on the engine only" (pyproject's import-linter contract):
# the names everybody agrees on, so the kit's nodes carry exactly the operator's resource and taint.
from kaito_core.api.constants import GPU_RESOURCE
from kaito_core.api.constants import GPU_TAINT as _GPU_TAINT
from kaito_core.engine.objects import condition_of

__all__ = [
    "GPU_RESOURCE",
    "GPU_TAINT",
    "KWOK_ANNOTATIONS",
    "create_gpu_node",
    "gpu_node_manifest",
    "wait_for_node_ready",
]

#: The taint Kaito puts on GPU nodes so only GPU workloads land there (``kaito_core.api.GPU_TAINT``).
GPU_TAINT: dict[str, str] = dict(_GPU_TAINT)
KWOK_ANNOTATIONS = {"kwok.x-k8s.io/node": "fake"}


def gpu_node_manifest(
    name: str,
    *,
    instance_type: str = "Standard_NC6s_v3",
    gpus: int = 1,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    provider_id: str | None = None,
    cpu: str = "32",
    memory: str = "256Gi",
) -> dict[str, Any]:
    """A Node manifest that kwok manages: capacity ``nvidia.com/gpu`` and instance-type labels.

    Nodes keep their status on create, so capacity is set here and kwok's
    initialize stage keeps it while adding conditions and addresses.
    """
    resources = {"cpu": cpu, "memory": memory, "pods": "110", GPU_RESOURCE: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": dict(KWOK_ANNOTATIONS),
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": instance_type,
                "beta.kubernetes.io/instance-type": instance_type,
                "type": "kwok",
                "accelerator": "nvidia",
                **(labels or {}),
            },
        },
        "spec": {
            "providerID": provider_id or f"kwok://{name}",
            "taints": [dict(t) for t in (taints if taints is not None else [GPU_TAINT])],
        },
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


async def wait_for_node_ready(api: client.ApiClient, name: str, timeout: float = 60.0) -> Any:
    """Poll until kwok has marked the node Ready; returns the Node."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        node = await core.read_node(name, _request_timeout=10)
        ready = condition_of(api.sanitize_for_serialization(node), "Ready")
        if ready is not None and ready.get("status") == "True":
            return node
        if time.monotonic() > deadline:
            raise TimeoutError(f"node {name} not Ready after {timeout:.0f}s: is kwok running?")
        await asyncio.sleep(0.2)


async def create_gpu_node(api: client.ApiClient, name: str, *, wait: bool = True, **kwargs: Any) -> Any:
    """Create a simulated GPU node (see :func:`gpu_node_manifest`) and wait until Ready."""
    core = client.CoreV1Api(api)
    manifest: Any = gpu_node_manifest(name, **kwargs)
    await core.create_node(manifest, _request_timeout=10)
    if wait:
        return await wait_for_node_ready(api, name)
    return await core.read_node(name, _request_timeout=10)
