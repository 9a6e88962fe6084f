"""Bring-your-own nodes by labels alone (Kaito's BYO): no ``instanceType``, ``labelSelector`` picks the nodes.

With no SKU to look up, what a node has comes from its NVIDIA GPU feature discovery labels
(:func:`kaito_core.provisioning.gpu_labels.node_gpus`), and the fit check the validator makes against a
SKU is made here against each node: a node whose labelled GPUs are too small (or that has no such labels)
is not used, and the reason, naming the node and its labels, goes into ``ResourceReady``.

A preset that spreads over nodes (``distributed_inference``) is not refused per node: the node count
is computed from the labelled memory instead (:func:`~kaito_core.controllers.workspace.nodes.required_node_count`).
A pod template (no preset) needs no labels: kaito-core does not know what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kaito_presets import ModelPreset, format_quantity

from kaito_core.api import ANNOTATION_BYPASS_RESOURCE_CHECKS, Workspace
from kaito_core.provisioning.gpu_labels import node_gpus

__all__ = ["label_fit_problem"]


def _need(ws: Workspace, preset: ModelPreset) -> tuple[int, int, str] | None:
    """(GPU memory, GPUs, what for) one node must have; None when a node need not hold it alone."""
    if ws.tuning is not None:
        memory = preset.tuning_gpu_memory(ws.tuning.method)
        if memory is None or preset.tuning is None:
            return None  # the validator has refused it already
        return memory, preset.tuning.gpu_count, f"{ws.tuning.method} tuning"
    if preset.distributed_inference:
        return None
    return preset.inference.gpu_memory, preset.inference.gpu_count, "inference"


def label_fit_problem(ws: Workspace, preset: ModelPreset | None, node: Mapping[str, Any]) -> str | None:
    """Why ``node`` (picked by labels, no instance type) cannot run ``ws``; None when it can."""
    if preset is None:
        return None
    gpus = node_gpus(node)
    if isinstance(gpus, str):
        return gpus
    if ws.annotations.get(ANNOTATION_BYPASS_RESOURCE_CHECKS, "").lower() == "true":
        return None
    need = _need(ws, preset)
    if need is None:
        return None
    memory, count, what = need
    if gpus.gpu_memory < memory:
        return (f"node {gpus.node} has {format_quantity(gpus.gpu_memory)} GPU memory ({gpus.labels_text}); "
                f"{preset.name} needs {format_quantity(memory)} for {what}; use a node with more GPU memory")
    if gpus.gpu_count < count:
        return (f"node {gpus.node} has {gpus.gpu_count} GPU(s) ({gpus.labels_text}); {preset.name} needs "
                f"{count} for {what}; use a node with more GPUs")
    return None

