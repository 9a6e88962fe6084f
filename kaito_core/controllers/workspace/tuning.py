"""The tuning workload: a Job that fetches the data, trains, and saves or pushes the adapter.

* init container: download ``input.urls`` (retries, size limit, a deadline per file) or copy ``input.image``'s /data
  into ``/mnt/data``; an ``input.volumeSource`` is mounted there instead;
* trainer: ``python -m kaito_presets.runtime.tuning`` with the method's ConfigMap (ours, from the
  runtime's lora/qlora template, when ``tuning.config`` is empty);
* output: ``output.volumeSource`` is mounted at ``/mnt/results``; for ``output.image`` a sidecar
  waits for the trainer's completion marker and pushes the results with the push secret.

The Job has ``activeDeadlineSeconds`` (``WorkspaceSettings.tuning_active_deadline_seconds``): a
slow source or a stuck trainer ends as a failed Job instead of holding the GPU node.

The Job's pod template is immutable: a change of the tuning spec deletes the Job (the
``kaito.sh/tuning-hash`` annotation tells) and the next run creates the new one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kaito_presets.runtime.tuning.config import default_template

from kaito_core.api import GPU_RESOURCE
from kaito_core.controllers.workspace import runtime as rt
from kaito_core.controllers.workspace.context import BuildContext, gpu_tolerations, node_affinity
from kaito_core.controllers.workspace.naming import config_map_name
from kaito_core.controllers.workspace.security import restricted
from kaito_core.controllers.workspace.weights import (
    offline_env,
    registry_env,
    weights_init_containers,
    weights_mount,
    weights_volumes,
)

__all__ = ["TUNING_HASH_ANNOTATION", "tuning_config_map", "tuning_config_name", "tuning_hash", "tuning_job"]

TUNING_HASH_ANNOTATION = "kaito.sh/tuning-hash"
_DATA = "data-volume"
_RESULTS = "results-volume"
_CONFIG = "config-volume"
_PUSH_SECRET = "push-secret"
_SHM = "dshm"


def tuning_config_name(ctx: BuildContext) -> str:
    assert ctx.ws.tuning is not None
    return ctx.ws.tuning.config or config_map_name(ctx.name, "tuning")


def tuning_config_map(ctx: BuildContext) -> dict[str, Any]:
    """Our default training ConfigMap: the runtime's template for the method (lora or qlora)."""
    assert ctx.ws.tuning is not None
    method = ctx.ws.tuning.method
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": ctx.metadata(tuning_config_name(ctx), labels={"kaito.sh/tuning-method": method}),
            "data": {rt.TUNING_CONFIG_KEY: default_template(method)}}


def tuning_hash(ctx: BuildContext) -> str:
    """What the Job was made from: the tuning spec, the nodes and the images."""
    assert ctx.ws.tuning is not None
    payload = {"tuning": ctx.ws.tuning.to_dict(), "nodes": sorted(ctx.nodes),
               "image": ctx.runtime_image(), "weights": ctx.weights_source().describe() if ctx.preset else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def tuning_job(ctx: BuildContext) -> dict[str, Any]:
    assert ctx.ws.tuning is not None and ctx.preset is not None
    tuning = ctx.ws.tuning
    source = tuning.input
    dest = tuning.output
    gpus = str(ctx.gpus_per_node)
    volumes: list[dict[str, Any]] = [
        {"name": _SHM, "emptyDir": {"medium": "Memory"}},
        {"name": _CONFIG, "configMap": {"name": tuning_config_name(ctx)}},
        *weights_volumes(ctx),
    ]
    init: list[dict[str, Any]] = weights_init_containers(ctx)
    data_mount = {"name": _DATA, "mountPath": rt.DATA_DIR}
    if source is not None and source.volume_source:
        volumes.append({"name": _DATA, **source.volume_source})
    else:
        volumes.append({"name": _DATA, "emptyDir": {}})
        if source is not None and source.urls:
            init.append({"name": "data-downloader", "image": ctx.runtime_image(),
                         "imagePullPolicy": "IfNotPresent",
                         "command": rt.download_command(list(source.urls),
                                                        max_bytes=ctx.settings.download_max_bytes,
                                                        attempts=ctx.settings.download_attempts,
                                                        deadline=ctx.settings.download_deadline_seconds),
                         "volumeMounts": [data_mount]})
            if ctx.settings.url_mirrors:
                init[-1]["env"] = [{"name": rt.URL_MIRRORS_ENV,
                                    "value": json.dumps(ctx.settings.url_mirrors, sort_keys=True)}]
        elif source is not None and source.image:
            init.append({"name": "data-extractor", "image": source.image, "imagePullPolicy": "IfNotPresent",
                         "command": rt.image_data_copy_command(), "volumeMounts": [data_mount]})
    results_mount = {"name": _RESULTS, "mountPath": rt.RESULTS_DIR}
    if dest is not None and dest.volume_source:
        volumes.append({"name": _RESULTS, **dest.volume_source})
    else:
        volumes.append({"name": _RESULTS, "emptyDir": {}})
    trainer: dict[str, Any] = {
        "name": "tuning",
        "image": ctx.runtime_image(),
        "imagePullPolicy": "IfNotPresent",
        "command": rt.tuning_command(tuning.method),
        "resources": {"requests": {GPU_RESOURCE: gpus}, "limits": {GPU_RESOURCE: gpus}},
        "volumeMounts": [weights_mount(ctx), {"name": _SHM, "mountPath": rt.SHM_DIR},
                         {"name": _CONFIG, "mountPath": rt.CONFIG_DIR, "readOnly": True},
                         data_mount, results_mount],
    }
    trainer["env"] = offline_env()
    containers = [trainer]
    if dest is not None and dest.image:
        containers.append({
            "name": "pusher", "image": ctx.runtime_image(), "imagePullPolicy": "IfNotPresent",
            "command": rt.push_command(dest.image, ctx.preset.name),
            **({"env": registry_env(ctx)} if registry_env(ctx) else {}),
            "volumeMounts": [results_mount,
                             {"name": _PUSH_SECRET, "mountPath": rt.PUSH_SECRET_DIR, "readOnly": True}],
        })
        # optional: a registry that takes anonymous pushes needs no secret, and a missing one must not hold
        # the pod in ContainerCreating forever; the pusher says it pushed anonymously, and why a refusal was
        volumes.append({"name": _PUSH_SECRET, "secret": {"secretName": dest.image_push_secret or "",
                                                         "optional": True}})
    pull_secrets = ctx.image_pull_secrets() + [
        {"name": n} for n in (source.image_pull_secrets or [] if source is not None else [])]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": containers,
        "volumes": volumes,
        "tolerations": gpu_tolerations(),
        "affinity": node_affinity(ctx.nodes),
    }
    if init:
        spec["initContainers"] = init
    if pull_secrets:
        spec["imagePullSecrets"] = pull_secrets
    restricted(spec)
    meta = ctx.metadata(ctx.name)
    meta.setdefault("annotations", {})[TUNING_HASH_ANNOTATION] = tuning_hash(ctx)
    job_spec: dict[str, Any] = {
        "backoffLimit": ctx.settings.tuning_backoff_limit,
        "template": {"metadata": {"labels": dict(ctx.selector_labels)}, "spec": spec},
    }
    if ctx.settings.tuning_active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = ctx.settings.tuning_active_deadline_seconds
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}
