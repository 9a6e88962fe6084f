"""What every manifest builder needs: the Workspace, its preset and SKU, the chosen nodes, settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaito_presets import RUNTIME_VLLM, WEIGHTS_SOURCE_HUGGINGFACE, GpuSku, ModelPreset

from kaito_core.api import (
    ANNOTATION_MODEL_WEIGHTS,
    ANNOTATION_REVISION,
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    WEIGHTS_KIND_HUGGINGFACE,
    WEIGHTS_KIND_OCI,
    WORKSPACE_KIND,
    WeightsSource,
    Workspace,
    parse_weights_source,
)
from kaito_core.api.validation import resolve_runtime
from kaito_core.controllers.workspace.kinds import WORKSPACE
from kaito_core.controllers.workspace.settings import WorkspaceSettings
from kaito_core.provisioning.gpu_labels import NodeGpus

__all__ = ["BuildContext", "gpu_tolerations", "node_affinity", "owner_reference", "placement_affinity"]


def owner_reference(ws: Workspace) -> dict[str, Any]:
    """The controller ownerReference to the Workspace: children go with it (garbage collection)."""
    return {"apiVersion": WORKSPACE.api_version, "kind": WORKSPACE_KIND, "name": ws.name,
            "uid": ws.metadata.uid or "", "controller": True, "blockOwnerDeletion": True}


def gpu_tolerations() -> list[dict[str, Any]]:
    """Tolerate the GPU taint (sku=gpu:NoSchedule) and the device plugin's own."""
    return [
        {"key": GPU_TAINT_KEY, "operator": "Equal", "value": GPU_TAINT_VALUE, "effect": GPU_TAINT_EFFECT},
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    ]


def node_affinity(nodes: list[str]) -> dict[str, Any]:
    """Required node affinity to exactly these nodes, by name (one term per node: the terms are ORed,
    and a ``metadata.name`` field selector takes a single value)."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]} for node in sorted(nodes)
    ]}}}


def placement_affinity(ctx: BuildContext) -> dict[str, Any]:
    """Required node affinity of a long-running workload: the nodes made for this Workspace by
    their ``kaito.sh/workspace*`` labels, other nodes (brought by the user) by name.

    A node added or removed for a labelled Workspace leaves the pod template unchanged, so
    scaling ``resource.count`` adds or removes replicas without restarting the ones that serve.
    """
    terms: list[dict[str, Any]] = []
    if any(node in ctx.labelled_nodes for node in ctx.nodes):
        terms.append({"matchExpressions": [
            {"key": LABEL_WORKSPACE, "operator": "In", "values": [ctx.name]},
            {"key": LABEL_WORKSPACE_NAMESPACE, "operator": "In", "values": [ctx.namespace]},
        ]})
    by_name = sorted(node for node in ctx.nodes if node not in ctx.labelled_nodes)
    terms += [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]} for node in by_name]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


@dataclass
class BuildContext:
    ws: Workspace
    settings: WorkspaceSettings
    preset: ModelPreset | None = None
    sku: GpuSku | NodeGpus | None = None
    """The instance type's figures, or (no instance type) what the chosen nodes' GPU labels show."""
    nodes: list[str] = field(default_factory=list)
    labelled_nodes: frozenset[str] = frozenset()
    """Nodes of ``nodes`` that carry this Workspace's labels (made for it by a Machine)."""
    revision: str = ""

    @property
    def name(self) -> str:
        return self.ws.name

    @property
    def namespace(self) -> str:
        return self.ws.namespace

    @property
    def selector_labels(self) -> dict[str, str]:
        return {LABEL_WORKSPACE: self.ws.name}

    def metadata(self, name: str, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name, "namespace": self.namespace,
            "labels": {**self.selector_labels, **(labels or {})},
            "ownerReferences": [owner_reference(self.ws)],
        }
        if self.revision:
            meta["annotations"] = {ANNOTATION_REVISION: self.revision}
        return meta

    @property
    def gpus_per_node(self) -> int:
        """GPUs a pod asks for: all of the SKU's (a GPU node serves one Workspace), else the preset's."""
        if self.sku is not None:
            return self.sku.gpu_count
        if self.preset is not None:
            return self.preset.inference.gpu_count
        return 1

    @property
    def runtime(self) -> str:
        return resolve_runtime(self.ws.runtime, self.settings.default_runtime, self.preset)

    def runtime_image(self) -> str:
        """kaito-core's runtime image for this Workspace's runtime (weights are not in it)."""
        runtime = self.runtime
        if runtime in self.settings.runtime_images:
            return self.settings.runtime_images[runtime]
        name = "kaito-runtime-vllm" if runtime == RUNTIME_VLLM else "kaito-runtime"
        return f"{self.settings.image_registry.rstrip('/')}/{name}:{self.settings.image_tag}"

    def weights_source(self) -> WeightsSource:
        """Where the preset's weights come from: the Workspace's ``kaito.sh/model-weights`` annotation,
        a private preset's ``presetOptions.image``, else the catalog's default for the preset."""
        assert self.preset is not None
        override = self.ws.annotations.get(ANNOTATION_MODEL_WEIGHTS)
        if override:
            return parse_weights_source(override)  # validated before any build
        spec = self.ws.preset
        if spec is not None and spec.access_mode == "private" and spec.preset_options and spec.preset_options.image:
            return WeightsSource(WEIGHTS_KIND_OCI, image=spec.preset_options.image)
        if self.preset.weights.source == WEIGHTS_SOURCE_HUGGINGFACE:
            return WeightsSource(WEIGHTS_KIND_HUGGINGFACE, repo=self.preset.huggingface_id,
                                 revision=self.preset.revision)
        tag = self.settings.weights_tags.get(self.preset.name, self.preset.weights.tag)
        return WeightsSource(WEIGHTS_KIND_OCI,
                             image=f"{self.settings.weights_registry.rstrip('/')}/kaito-{self.preset.name}:{tag}")

    def image_pull_secrets(self) -> list[dict[str, str]]:
        spec = self.ws.preset
        names = (spec.preset_options.image_pull_secrets or []) if spec and spec.preset_options else []
        return [{"name": n} for n in names]

    def model_access_env(self) -> list[dict[str, Any]]:
        spec = self.ws.preset
        secret = spec.preset_options.model_access_secret if spec and spec.preset_options else None
        if not secret:
            return []
        return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "HF_TOKEN"}}}]
