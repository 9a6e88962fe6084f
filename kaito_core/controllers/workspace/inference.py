"""The inference workload: Deployment or StatefulSet, Services. Pure manifest builders.

The preset's default ``inference_config.yaml`` travels in the pod template (annotation
``kaito.sh/inference-config``, projected into ``/mnt/config`` by a downwardAPI volume): one object
fewer to write per Workspace than a ConfigMap, it changes with the template it belongs to, and
``kubectl get deployment -o yaml`` shows it. A user's ``inference.config`` ConfigMap is mounted as is.

* one node per replica (the preset fits one node): a Deployment, ``count`` replicas, one per node;
* a preset split across several nodes: a StatefulSet (rank = pod index) plus a headless Service
  for the torchrun rendezvous on port 29500;
* a Service named after the Workspace: port 80 -> the server, 29500 -> torch; a LoadBalancer
  when the Workspace is annotated ``kaito.sh/enablelb: "True"``;
* a ``template`` Workspace runs the user's pod template as given, on the chosen nodes.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import yaml
from kaito_presets.sizing import GPU_MEMORY_UTILIZATION, max_model_len, nodes_needed

from kaito_core.api import ANNOTATION_REVISION, GPU_RESOURCE
from kaito_core.controllers.workspace import runtime as rt
from kaito_core.controllers.workspace.adapters import (
    adapter_env,
    adapter_init_containers,
    adapter_mounts,
    adapter_volumes,
)
from kaito_core.controllers.workspace.auth import api_key_env, load_balanced
from kaito_core.controllers.workspace.context import BuildContext, gpu_tolerations, placement_affinity
from kaito_core.controllers.workspace.naming import config_map_name, headless_service_name
from kaito_core.controllers.workspace.security import restricted
from kaito_core.controllers.workspace.weights import (
    offline_env,
    registry_env,
    weights_init_containers,
    weights_mount,
    weights_volumes,
)

__all__ = [
    "CONFIG_HASH_ANNOTATION",
    "INFERENCE_CONFIG_ANNOTATION",
    "default_inference_config",
    "default_inference_config_data",
    "headless_service",
    "inference_config_name",
    "inference_service",
    "inference_workload",
    "is_distributed",
    "nodes_per_replica",
    "sized_max_model_len",
]

CONFIG_HASH_ANNOTATION = "kaito.sh/config-hash"
#: The pod template's annotation that holds the default inference config (a downwardAPI volume mounts it).
INFERENCE_CONFIG_ANNOTATION = "kaito.sh/inference-config"
_CONFIG_VOLUME = "config-volume"
_SHM_VOLUME = "dshm"


def nodes_per_replica(ctx: BuildContext) -> int:
    """Nodes of the Workspace's instance type one copy of the preset needs (1 without a SKU)."""
    if ctx.preset is None or ctx.sku is None:
        return 1
    return nodes_needed(ctx.sku, ctx.preset.inference.gpu_memory, ctx.preset.inference.gpu_count)


def is_distributed(ctx: BuildContext) -> bool:
    """The preset needs more than one node per replica: a StatefulSet with torchrun ranks."""
    if ctx.ws.inference is None or ctx.ws.inference.template:
        return False
    return nodes_per_replica(ctx) > 1


def sized_max_model_len(ctx: BuildContext) -> int:
    """The context the KV cache fits in on the GPUs one replica spans (kaito_presets.sizing), capped
    at the model's. Sized by the nodes a replica needs, not those that exist yet, so the ConfigMap
    does not change (and roll the pods) while nodes come up. The full context without a SKU."""
    assert ctx.preset is not None
    if ctx.sku is None:
        return ctx.preset.context_length
    return max_model_len(ctx.preset, gpu_memory_per_gpu=ctx.sku.gpu_memory_per_gpu,
                         gpus=ctx.sku.gpu_count * nodes_per_replica(ctx))


def inference_config_name(ctx: BuildContext) -> str:
    """The name of the default config's ConfigMap that earlier versions made (the reconciler removes it)."""
    return config_map_name(ctx.name, "inference")


def default_inference_config(ctx: BuildContext) -> dict[str, Any]:
    """The default ``inference_config.yaml`` (kaito_presets.runtime.inference.config) from the preset."""
    assert ctx.preset is not None
    context = sized_max_model_len(ctx)
    config: dict[str, Any] = {
        "model": rt.MODEL_DIR,
        "served_model_name": ctx.preset.name,
        "backend": ctx.runtime,
        "dtype": "auto",
        "max_model_len": context,
        "max_new_tokens": 256,
        "max_new_tokens_limit": 4096,
        "adapters_dir": rt.ADAPTERS_DIR,
        "port": rt.INFERENCE_PORT,
        "transformers": {"device_map": "auto", "combination_type": "cat"},
        # vLLM's engine arguments: max-model-len is what keeps it from reserving a KV cache for the
        # model's full context on a GPU too small for it (the pod would fail at start).
        "vllm": {"gpu-memory-utilization": GPU_MEMORY_UTILIZATION, "tensor-parallel-size": ctx.gpus_per_node,
                 "max-model-len": context},
    }
    if ctx.ws.inference is not None and ctx.ws.inference.adapters:
        config["vllm"]["enable-lora"] = True
        config["vllm"]["max-loras"] = len(ctx.ws.inference.adapters)
    return config


def default_inference_config_data(ctx: BuildContext) -> dict[str, str]:
    """The default config as ConfigMap-style data (``inference_config.yaml`` -> YAML)."""
    return {rt.INFERENCE_CONFIG_KEY: yaml.safe_dump(default_inference_config(ctx), sort_keys=False)}


def _config_volume(ctx: BuildContext) -> dict[str, Any]:
    assert ctx.ws.inference is not None
    if ctx.ws.inference.config:
        return {"name": _CONFIG_VOLUME, "configMap": {"name": ctx.ws.inference.config}}
    return {"name": _CONFIG_VOLUME, "downwardAPI": {"items": [
        {"path": rt.INFERENCE_CONFIG_KEY,
         "fieldRef": {"fieldPath": f"metadata.annotations['{INFERENCE_CONFIG_ANNOTATION}']"}}]}}


def config_hash(data: dict[str, Any] | None) -> str:
    return hashlib.sha256(json.dumps(data or {}, sort_keys=True).encode()).hexdigest()[:16]


def _env(ctx: BuildContext, distributed: bool) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    if distributed:
        replicas = _replicas(ctx)
        env += [
            {"name": rt.ENV_MASTER_ADDR,
             "value": f"{ctx.name}-0.{headless_service_name(ctx.name)}.{ctx.namespace}.svc.cluster.local"},
            {"name": rt.ENV_MASTER_PORT, "value": str(rt.TORCH_PORT)},
            {"name": rt.ENV_NODE_RANK, "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.labels['{rt.POD_INDEX_LABEL}']"}}},
            {"name": rt.ENV_NNODES, "value": str(replicas)},
            {"name": rt.ENV_NPROC_PER_NODE, "value": str(ctx.gpus_per_node)},
            {"name": rt.ENV_WORLD_SIZE, "value": str(replicas * ctx.gpus_per_node)},
        ]
    env += offline_env()
    assert ctx.ws.inference is not None
    env += adapter_env(ctx.ws.inference.adapters)
    env += api_key_env(ctx.ws)
    return env


def _replicas(ctx: BuildContext) -> int:
    return max(1, len(ctx.nodes))


def preset_pod_spec(ctx: BuildContext, *, config_data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pod template of a preset: image, runtime command, GPUs, /dev/shm, probes, adapters, nodes."""
    assert ctx.ws.inference is not None and ctx.preset is not None
    inference = ctx.ws.inference
    distributed = is_distributed(ctx)
    gpus = str(ctx.gpus_per_node)
    probe_http = {"path": rt.HEALTH_PATH, "port": rt.INFERENCE_PORT}
    container: dict[str, Any] = {
        "name": ctx.name if len(ctx.name) <= 63 else "inference",
        "image": ctx.runtime_image(),
        "imagePullPolicy": "IfNotPresent",
        "command": rt.inference_command(ctx.runtime, ctx.preset.name, distributed=distributed),
        "env": _env(ctx, distributed),
        "ports": [{"name": "http", "containerPort": rt.INFERENCE_PORT, "protocol": "TCP"}]
        + ([{"name": "torch", "containerPort": rt.TORCH_PORT, "protocol": "TCP"}] if distributed else []),
        "resources": {"requests": {GPU_RESOURCE: gpus}, "limits": {GPU_RESOURCE: gpus}},
        "startupProbe": {"httpGet": probe_http, "periodSeconds": 10,
                         "failureThreshold": max(1, ctx.settings.startup_timeout_seconds // 10)},
        "livenessProbe": {"httpGet": probe_http, "initialDelaySeconds": ctx.settings.probe_initial_delay_seconds,
                          "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
        "readinessProbe": {"httpGet": probe_http, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 3},
        "volumeMounts": [
            weights_mount(ctx),
            {"name": _SHM_VOLUME, "mountPath": rt.SHM_DIR},
            {"name": _CONFIG_VOLUME, "mountPath": rt.CONFIG_DIR, "readOnly": True},
            *adapter_mounts(inference.adapters),
        ],
    }
    shm: dict[str, Any] = {"medium": "Memory"}
    if ctx.settings.shm_size:
        shm["sizeLimit"] = ctx.settings.shm_size
    volumes: list[dict[str, Any]] = [
        {"name": _SHM_VOLUME, "emptyDir": shm},
        _config_volume(ctx),
        *adapter_volumes(inference.adapters),
        *weights_volumes(ctx),
    ]
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "tolerations": gpu_tolerations(),
        "affinity": _affinity(ctx, distributed),
    }
    adapters = adapter_init_containers(inference.adapters, ctx.runtime_image())
    for adapter in adapters:
        if registry_env(ctx):
            adapter["env"] = registry_env(ctx)
    init = weights_init_containers(ctx) + adapters
    if init:
        spec["initContainers"] = init
    secrets = ctx.image_pull_secrets()
    if secrets:
        spec["imagePullSecrets"] = secrets
    return restricted(spec)


def _affinity(ctx: BuildContext, distributed: bool) -> dict[str, Any]:
    affinity = placement_affinity(ctx)
    if not distributed:
        # One replica per node: each holds all of a node's GPUs. Set for one replica too, so
        # going from one node to two changes only the replica count, not the template.
        affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": ctx.selector_labels}, "topologyKey": "kubernetes.io/hostname"}]}
    return affinity


def template_pod_spec(ctx: BuildContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's pod template as given (metadata, spec), placed on the chosen nodes."""
    assert ctx.ws.inference is not None and ctx.ws.inference.template is not None
    template = copy.deepcopy(ctx.ws.inference.template)
    meta = dict(template.get("metadata") or {})
    spec = dict(template.get("spec") or {})
    tolerations = list(spec.get("tolerations") or [])
    for toleration in gpu_tolerations():
        if toleration not in tolerations:
            tolerations.append(toleration)
    spec["tolerations"] = tolerations
    affinity = dict(spec.get("affinity") or {})
    affinity.update(placement_affinity(ctx))
    spec["affinity"] = affinity
    return meta, spec


def inference_workload(ctx: BuildContext, *, config_data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Deployment (or StatefulSet when distributed), apply-ready."""
    assert ctx.ws.inference is not None
    annotations: dict[str, str] = {}
    if ctx.ws.inference.template is not None:
        user_meta, spec = template_pod_spec(ctx)
        labels = {**(user_meta.get("labels") or {}), **ctx.selector_labels}
        annotations.update(user_meta.get("annotations") or {})
        distributed = False
    else:
        spec = preset_pod_spec(ctx, config_data=config_data)
        labels = dict(ctx.selector_labels)
        distributed = is_distributed(ctx)
        # A change of the ConfigMap's content rolls the pods too.
        annotations[CONFIG_HASH_ANNOTATION] = config_hash(config_data)
        if not ctx.ws.inference.config:
            data = config_data if config_data and rt.INFERENCE_CONFIG_KEY in config_data \
                else default_inference_config_data(ctx)
            annotations[INFERENCE_CONFIG_ANNOTATION] = str(data[rt.INFERENCE_CONFIG_KEY])
    template: dict[str, Any] = {"metadata": {"labels": labels}, "spec": spec}
    if annotations:
        template["metadata"]["annotations"] = annotations
    body: dict[str, Any] = {
        "replicas": _replicas(ctx),
        "selector": {"matchLabels": dict(ctx.selector_labels)},
        "template": template,
    }
    if distributed:
        body.update({"serviceName": headless_service_name(ctx.name), "podManagementPolicy": "Parallel"})
        kind = "StatefulSet"
    else:
        body["strategy"] = {"type": "RollingUpdate",
                            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
        kind = "Deployment"
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": ctx.metadata(ctx.name), "spec": body}


def inference_service(ctx: BuildContext) -> dict[str, Any]:
    """The Service named after the Workspace: 80 -> the server, 29500 -> torch."""
    lb = load_balanced(ctx.ws)
    selector = dict(ctx.selector_labels)
    if is_distributed(ctx):
        selector["statefulset.kubernetes.io/pod-name"] = f"{ctx.name}-0"
    return {"apiVersion": "v1", "kind": "Service", "metadata": ctx.metadata(ctx.name), "spec": {
        "type": "LoadBalancer" if lb else "ClusterIP",
        "selector": selector,
        "ports": [
            {"name": "http", "port": 80, "targetPort": rt.INFERENCE_PORT, "protocol": "TCP"},
            {"name": "torch", "port": rt.TORCH_PORT, "targetPort": rt.TORCH_PORT, "protocol": "TCP"},
        ],
    }}


def headless_service(ctx: BuildContext) -> dict[str, Any]:
    """Stable DNS names for the StatefulSet's pods (the torchrun rendezvous)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": ctx.metadata(headless_service_name(ctx.name)),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": dict(ctx.selector_labels),
                     "ports": [{"name": "torch", "port": rt.TORCH_PORT, "targetPort": rt.TORCH_PORT,
                                "protocol": "TCP"}]}}


def revision_of(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_REVISION)
