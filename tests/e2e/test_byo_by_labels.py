"""Bring-your-own GPU nodes by labels alone (Kaito's BYO), on the full control plane with kwok nodes: no
instanceType, the labelSelector picks the node and its GPU feature discovery labels say what it has."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml
from workspace_support import condition, eventually, is_true, kubectl, machines_of, running_controller

from kaito_core.controllers.workspace import WORKSPACE
from kaito_core.engine import POD
from kaito_core.testing import Cluster

pytestmark = pytest.mark.e2e


def gfd(memory_mib: int, product: str) -> dict[str, str]:
    return {"nvidia.com/gpu.product": product, "nvidia.com/gpu.count": "1",
            "nvidia.com/gpu.memory": str(memory_mib)}


def manifest(name: str, app: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name},
        "resource": {"labelSelector": {"matchLabels": {"apps": app}}},  # no instanceType
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}})


async def test_a_workspace_without_instance_type_runs_on_the_labelled_node(
        kube_cluster: Cluster, kube_namespace: str, make_gpu_node: Any) -> None:
    ns, app = kube_namespace, f"byo-{uuid.uuid4().hex[:6]}"
    # The instance type label names a SKU the catalog does not know: only the GFD labels can size it.
    node = await make_gpu_node(labels={"apps": app, **gfd(16384, "NVIDIA-V100-SXM2-16GB")},
                               instance_type="my-own-gpu-box")
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=manifest("byo-labels", app))

        async def ready() -> bool:
            return is_true(await client.get_or_none(WORKSPACE, "byo-labels", ns), "WorkspaceReady")

        await eventually(ready, 90, message="WorkspaceReady")
        ws = await client.get(WORKSPACE, "byo-labels", ns)
        assert ws["status"]["workerNodes"] == [node.metadata.name]
        assert await machines_of(client, ns, "byo-labels") == []
        pods = (await client.list(POD, ns, label_selector={"kaito.sh/workspace": "byo-labels"})).items
        assert [p["spec"]["nodeName"] for p in pods] == [node.metadata.name]
        # The pod asks for the GPUs the labels show (one), as it would for a SKU's.
        limits = pods[0]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"


async def test_a_labelled_node_too_small_gets_the_fit_message(
        kube_cluster: Cluster, kube_namespace: str, make_gpu_node: Any) -> None:
    ns, app = kube_namespace, f"byo-{uuid.uuid4().hex[:6]}"
    node = await make_gpu_node(labels={"apps": app, **gfd(4096, "NVIDIA-T4-4GB")}, instance_type="small-box")
    name = node.metadata.name
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=manifest("byo-small", app))

        async def said() -> bool:
            cond = condition(await client.get_or_none(WORKSPACE, "byo-small", ns), "ResourceReady")
            return cond is not None and cond["status"] == "False" and name in cond.get("message", "")

        await eventually(said, 60, message="ResourceReady False naming the node")
        cond = condition(await client.get(WORKSPACE, "byo-small", ns), "ResourceReady")
        assert cond is not None
        assert (f"node {name} has 4Gi GPU memory (nvidia.com/gpu.product=NVIDIA-T4-4GB, nvidia.com/gpu.count=1, "
                "nvidia.com/gpu.memory=4096 (MiB per GPU)); phi-3-mini-4k-instruct needs 9Gi") in cond["message"]
        assert await machines_of(client, ns, "byo-small") == []
        assert (await client.list(POD, ns)).items == []
