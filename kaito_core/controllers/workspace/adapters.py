"""Adapters: one init container per adapter pulls its image into ``/mnt/adapter/<name>``; an adapter whose
source is a volume (a PVC, as Kaito serves them) is mounted there read-only instead, nothing to pull.

The strengths go in as env (a JSON table plus one variable per adapter, the runtime reads
either). Changing the adapter list changes the pod template, so the workload rolls; the
nodes are not touched.
"""

from __future__ import annotations

import json
from typing import Any

from kaito_core.api import AdapterSpec
from kaito_core.controllers.workspace import runtime as rt
from kaito_core.controllers.workspace.naming import truncate

__all__ = ["ADAPTER_VOLUME", "adapter_env", "adapter_init_containers", "adapter_volumes"]

ADAPTER_VOLUME = "adapter-volume"


def _named(adapters: list[AdapterSpec] | None) -> list[AdapterSpec]:
    return [a for a in adapters or ()
            if a.source is not None and a.source.name and (a.source.image or a.source.volume_source)]


def _from_volume(adapters: list[AdapterSpec] | None) -> list[AdapterSpec]:
    return [a for a in _named(adapters) if a.source is not None and not a.source.image]


def _volume_name(name: str) -> str:
    # Not "adapter-<name>": an adapter named "volume" would then clash with the shared ADAPTER_VOLUME.
    return truncate(f"adapter-src-{name}")


def adapter_init_containers(adapters: list[AdapterSpec] | None, image: str) -> list[dict[str, Any]]:
    """``python -m kaito_presets.runtime.oci pull --image <adapter> --dest /mnt/adapter/<name>``, one per
    adapter from an image."""
    out = []
    for adapter in _named(adapters):
        if adapter.source is None or not adapter.source.image:
            continue
        source = adapter.source
        assert source is not None and source.name and source.image
        secret = bool(source.image_pull_secrets)
        mounts: list[dict[str, Any]] = [{"name": ADAPTER_VOLUME, "mountPath": rt.ADAPTERS_DIR}]
        if secret:
            mounts.append({"name": _secret_volume(source.name), "mountPath": rt.PULL_SECRET_DIR, "readOnly": True})
        out.append({
            "name": truncate(f"adapter-{source.name}"),
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": rt.adapter_pull_command(source.image, source.name, with_secret=secret),
            "volumeMounts": mounts,
        })
    return out


def _secret_volume(name: str) -> str:
    return truncate(f"pull-{name}")


def adapter_volumes(adapters: list[AdapterSpec] | None) -> list[dict[str, Any]]:
    """The shared emptyDir, one pull-secret volume per adapter that names a secret, and the volume of each
    adapter that comes from one."""
    named = _named(adapters)
    if not named:
        return []
    volumes: list[dict[str, Any]] = [{"name": ADAPTER_VOLUME, "emptyDir": {}}]
    for adapter in named:
        source = adapter.source
        assert source is not None and source.name
        if source.image_pull_secrets:
            volumes.append({"name": _secret_volume(source.name), "secret": {
                "secretName": source.image_pull_secrets[0],
                "items": [{"key": rt.DOCKER_CONFIG_KEY, "path": "config.json"}]}})
    for adapter in _from_volume(adapters):
        assert adapter.source is not None and adapter.source.name and adapter.source.volume_source
        volumes.append({**adapter.source.volume_source, "name": _volume_name(adapter.source.name)})
    return volumes


def adapter_env(adapters: list[AdapterSpec] | None) -> list[dict[str, Any]]:
    """``KAITO_ADAPTER_STRENGTHS={"name": strength}`` and ``<name>=<strength>`` (Kaito's convention)."""
    named = _named(adapters)
    if not named:
        return []
    table: dict[str, float] = {}
    env: list[dict[str, Any]] = []
    for adapter in named:
        assert adapter.source is not None and adapter.source.name
        strength = adapter.strength if adapter.strength is not None else "1.0"
        table[adapter.source.name] = float(strength)
        env.append({"name": adapter.source.name, "value": strength})
    return [{"name": rt.ADAPTER_STRENGTHS_ENV, "value": json.dumps(table, sort_keys=True)}, *env]


def adapter_mounts(adapters: list[AdapterSpec] | None) -> list[dict[str, Any]]:
    """The shared folder, and each volume adapter read-only in its own folder of it (what the runtime lists)."""
    if not _named(adapters):
        return []
    mounts: list[dict[str, Any]] = [{"name": ADAPTER_VOLUME, "mountPath": rt.ADAPTERS_DIR}]
    for adapter in _from_volume(adapters):
        assert adapter.source is not None and adapter.source.name
        mounts.append({"name": _volume_name(adapter.source.name),
                       "mountPath": f"{rt.ADAPTERS_DIR}/{adapter.source.name}", "readOnly": True})
    return mounts
