"""Bring-your-own nodes by labels alone: GPU feature discovery labels read as Kaito reads them, the fit check
per node, and the plan (pure functions over Node dicts)."""

from __future__ import annotations

from typing import Any

from kaito_presets import default_catalog

from kaito_core.api import Workspace
from kaito_core.controllers.workspace.nodes import labelled_gpus, plan_nodes, required_node_count, unplaced_message
from kaito_core.provisioning.gpu_labels import NodeGpus, node_gpus
from kaito_core.testing import gpu_node_manifest

CATALOG = default_catalog()
PHI3 = CATALOG.find_model("phi-3-mini-4k-instruct")


def gfd(product: str = "NVIDIA-V100-SXM2-16GB", count: str = "1", memory: str = "16384") -> dict[str, str]:
    return {"nvidia.com/gpu.product": product, "nvidia.com/gpu.count": count, "nvidia.com/gpu.memory": memory}


def node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    manifest = gpu_node_manifest(name, labels={"apps": "mine", **labels})
    manifest["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return manifest


def workspace(**resource: Any) -> Workspace:
    return Workspace.model_validate({
        "metadata": {"name": "ws", "namespace": "ns"},
        "resource": {"labelSelector": {"matchLabels": {"apps": "mine"}}, **resource},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}})


def test_gfd_labels_read_as_kaito_reads_them() -> None:
    gpus = node_gpus(node("n1", gfd(count="2", memory="81559")))  # an H100 reports a little under 80 GiB
    assert isinstance(gpus, NodeGpus)
    assert (gpus.product, gpus.gpu_count, gpus.gpu_memory_per_gpu, gpus.gpu_memory) == \
        ("NVIDIA-V100-SXM2-16GB", 2, 80 * 2**30, 160 * 2**30)


def test_missing_or_malformed_labels_are_named() -> None:
    labels = gfd()
    labels.pop("nvidia.com/gpu.memory")
    why = node_gpus(node("n1", labels))
    assert isinstance(why, str) and "node n1" in why and "nvidia.com/gpu.memory" in why
    why = node_gpus(node("n2", gfd(count="two")))
    assert isinstance(why, str) and "nvidia.com/gpu.count='two'" in why


def test_a_node_that_fits_is_used_without_an_instance_type() -> None:
    ws = workspace()
    nodes = [node("big", gfd())]
    plan = plan_nodes(ws, 1, [], nodes, preset=PHI3)
    assert plan.byo == ["big"] and plan.create_slots == [] and plan.unfit == {}
    gpus = labelled_gpus(ws, PHI3, nodes)
    assert gpus is not None and gpus.gpu_count == 1
    assert required_node_count(ws, PHI3, gpus) == 1


def test_a_node_too_small_gets_a_fit_message_naming_it_and_its_labels() -> None:
    ws = workspace()
    plan = plan_nodes(ws, 1, [], [node("small", gfd(product="NVIDIA-T4", memory="8192"))], preset=PHI3)
    assert plan.byo == [] and plan.create_slots == [0]
    message = unplaced_message(plan)
    assert "0 of 1 node(s)" in message
    assert ("node small has 8Gi GPU memory (nvidia.com/gpu.product=NVIDIA-T4, nvidia.com/gpu.count=1, "
            "nvidia.com/gpu.memory=8192 (MiB per GPU)); phi-3-mini-4k-instruct needs 9Gi for inference") in message


def test_a_node_without_gfd_labels_is_not_used_and_says_why() -> None:
    plan = plan_nodes(workspace(), 1, [], [node("bare", {})], preset=PHI3)
    assert plan.byo == [] and "node bare has no nvidia.com/gpu.product" in plan.unfit["bare"]


def test_nodes_outside_the_selector_are_not_looked_at() -> None:
    other = node("other", gfd())
    other["metadata"]["labels"]["apps"] = "theirs"
    plan = plan_nodes(workspace(), 1, [], [other], preset=PHI3)
    assert plan.byo == [] and plan.unfit == {}
