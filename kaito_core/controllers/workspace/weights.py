"""Model weights in the pod: a volume at ``/workspace/weights`` and the init container that fills it.

The runtime image carries no weights (one image per runtime, never one per model). The source
(``BuildContext.weights_source``) decides the rest:

* an OCI artifact in Kaito's layout or a Hugging Face repository: the ``model-weights-downloader``
  init container (our runtime image) pulls it into the volume, an ``emptyDir`` by default or the
  Workspace's weights claim when the operator keeps a cache (it finds the weights already there
  and returns at once);
* the user's PersistentVolumeClaim: mounted read-only, nothing is downloaded.

The serving and training containers mount the volume read-only and run offline.
"""

from __future__ import annotations

import json
from typing import Any

from kaito_presets import format_quantity

from kaito_core.api import WEIGHTS_KIND_HUGGINGFACE, WEIGHTS_KIND_OCI, WEIGHTS_KIND_VOLUME
from kaito_core.controllers.workspace import runtime as rt
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.naming import truncate

__all__ = [
    "WEIGHTS_INIT_CONTAINER",
    "WEIGHTS_VOLUME",
    "offline_env",
    "registry_env",
    "weights_cache_claim",
    "weights_cache_claim_name",
    "weights_init_containers",
    "weights_mount",
    "weights_volumes",
]

#: Names as Kaito gives them, so a person who knows Kaito's pods finds their way.
WEIGHTS_VOLUME = "model-weights-volume"
WEIGHTS_INIT_CONTAINER = "model-weights-downloader"
_WEIGHTS_SECRET_VOLUME = "weights-pull-secret"


def weights_cache_claim_name(ctx: BuildContext) -> str:
    return truncate(f"{ctx.name}-weights")


def _downloads(ctx: BuildContext) -> bool:
    return ctx.weights_source().kind != WEIGHTS_KIND_VOLUME


def weights_cache_claim(ctx: BuildContext) -> dict[str, Any] | None:
    """The Workspace's weights claim when the operator keeps a cache and the weights are downloaded."""
    cache = ctx.settings.weights_cache
    if cache is None or ctx.preset is None or not _downloads(ctx):
        return None
    spec: dict[str, Any] = {
        "accessModes": [cache.access_mode],
        "resources": {"requests": {"storage": cache.size or format_quantity(ctx.preset.inference.disk)}},
    }
    if cache.storage_class:
        spec["storageClassName"] = cache.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": ctx.metadata(weights_cache_claim_name(ctx)), "spec": spec}


def weights_volumes(ctx: BuildContext) -> list[dict[str, Any]]:
    source = ctx.weights_source()
    if source.kind == WEIGHTS_KIND_VOLUME:
        assert source.claim is not None
        return [{"name": WEIGHTS_VOLUME, "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True}}]
    if ctx.settings.weights_cache is not None:
        volumes = [{"name": WEIGHTS_VOLUME, "persistentVolumeClaim": {"claimName": weights_cache_claim_name(ctx)}}]
    else:
        volumes = [{"name": WEIGHTS_VOLUME, "emptyDir": {}}]
    secret = _pull_secret(ctx)
    if secret is not None:
        volumes.append({"name": _WEIGHTS_SECRET_VOLUME, "secret": {
            "secretName": secret, "items": [{"key": rt.DOCKER_CONFIG_KEY, "path": "config.json"}]}})
    return volumes


def weights_mount(ctx: BuildContext) -> dict[str, Any]:
    """The read-only mount of the serving and training containers."""
    mount: dict[str, Any] = {"name": WEIGHTS_VOLUME, "mountPath": rt.MODEL_DIR, "readOnly": True}
    source = ctx.weights_source()
    if source.kind == WEIGHTS_KIND_VOLUME and source.sub_path:
        mount["subPath"] = source.sub_path
    return mount


def _pull_secret(ctx: BuildContext) -> str | None:
    """Registry credentials for an OCI weights artifact: the first of ``presetOptions.imagePullSecrets``."""
    if ctx.weights_source().kind != WEIGHTS_KIND_OCI:
        return None
    secrets = ctx.image_pull_secrets()
    return secrets[0]["name"] if secrets else None


def registry_env(ctx: BuildContext) -> list[dict[str, Any]]:
    """What the runtimes' pull and push tools read of the operator's registry settings: the mirrors
    (``KAITO_REGISTRY_MIRRORS``) and the plain-HTTP registries (``KAITO_INSECURE_REGISTRIES``)."""
    env: list[dict[str, Any]] = []
    if ctx.settings.registry_mirrors:
        env.append({"name": rt.REGISTRY_MIRRORS_ENV,
                    "value": json.dumps(ctx.settings.registry_mirrors, sort_keys=True)})
    if ctx.settings.insecure_registries:
        env.append({"name": rt.INSECURE_REGISTRIES_ENV, "value": ",".join(ctx.settings.insecure_registries)})
    return env


def offline_env() -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in rt.OFFLINE_ENV]


def weights_init_containers(ctx: BuildContext) -> list[dict[str, Any]]:
    """The weights init container, or none when the weights are on the user's claim."""
    source = ctx.weights_source()
    if source.kind == WEIGHTS_KIND_VOLUME:
        return []
    secret = _pull_secret(ctx)
    env: list[dict[str, Any]] = registry_env(ctx)
    if source.kind == WEIGHTS_KIND_HUGGINGFACE:
        command = rt.weights_pull_command(hf_repo=source.repo, revision=source.revision)
        env += ctx.model_access_env()
        if ctx.settings.huggingface_endpoint:
            env.append({"name": rt.ENV_HF_ENDPOINT, "value": ctx.settings.huggingface_endpoint})
    else:
        command = rt.weights_pull_command(image=source.image, with_secret=secret is not None)
    mounts: list[dict[str, Any]] = [{"name": WEIGHTS_VOLUME, "mountPath": rt.MODEL_DIR}]
    if secret is not None:
        mounts.append({"name": _WEIGHTS_SECRET_VOLUME, "mountPath": rt.WEIGHTS_SECRET_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": WEIGHTS_INIT_CONTAINER,
        "image": ctx.runtime_image(),
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "volumeMounts": mounts,
        # The puller writes why it failed here; the Workspace's condition quotes it.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env:
        container["env"] = env
    return [container]
