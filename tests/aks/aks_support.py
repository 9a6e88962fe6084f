"""Helpers shared by the AKS provisioner tests (imported by name: tests/aks is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from azure.core.credentials import AccessToken
from fake_arm import FakeARM
from kaito_provisioner_aks import AKSProvisioner, AKSSettings

__all__ = ["FakeCredential", "MakeProvisioner", "gpu_machine", "settings_for"]

MakeProvisioner = Callable[..., Awaitable[AKSProvisioner]]


class FakeCredential:
    """An AsyncTokenCredential that hands out a static token (the fake ARM only checks there is one)."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken("test-token", int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *args: Any) -> None:
        return None


def settings_for(fake: FakeARM, **overrides: Any) -> AKSSettings:
    values: dict[str, Any] = {
        "arm_subscription_id": fake.subscription,
        "arm_resource_group": fake.resource_group,
        "azure_cluster_name": fake.cluster,
        "location": fake.location,
        "arm_base_url": fake.base_url,
        "arm_ca_bundle": str(fake.ca_path),
        "aks_poll_interval_seconds": 0.5,
        "aks_node_wait_seconds": 20.0,
        "aks_create_timeout_seconds": 60.0,
        "arm_retry_backoff_factor": 0.05,
        "arm_retry_backoff_max": 2,
    }
    values.update(overrides)
    return AKSSettings.model_validate(values)


def gpu_machine(name: str, instance_type: str = "Standard_NC6s_v3", *, workspace: str = "phi-3",
                namespace: str = "default", annotations: dict[str, str] | None = None,
                storage: str | None = None) -> dict[str, Any]:
    """A Machine as the Workspace reconciler makes it (a dict; the provisioner reads the model too)."""
    spec: dict[str, Any] = {
        "instanceType": instance_type,
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        "nodeLabels": {"apps": "phi-3"},
        "resources": {"requests": {"nvidia.com/gpu": "1"}},
        "provisioner": "aks",
    }
    if storage:
        spec["resources"]["requests"]["storage"] = storage
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": name, "labels": {"kaito.sh/workspace": workspace,
                                              "kaito.sh/workspacenamespace": namespace},
                     "annotations": annotations or {}},
        "spec": spec,
    }
