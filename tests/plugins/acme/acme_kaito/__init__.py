"""Acme Cloud's kaito-core provisioner: a third-party plugin written against the public API only.

Acme "instances" are kwok Nodes named ``acme-<machine>`` with providerID
``acme://<region>/<machine>``; everything else is the plugin contract: idempotent
``create`` (the name comes from the Machine), typed errors, our labels on every node.
"""

from __future__ import annotations

import builtins
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from kaito_core.engine import NODE, AlreadyExistsError, Client
from kaito_core.provisioning import (
    InstanceTypeUnavailableError,
    NodeRef,
    ProvisionerContext,
    node_labels_for,
    node_taints_for,
    parse_timestamp,
)

__all__ = ["AcmeProvisioner", "AcmeSettings"]

LABEL_MACHINE = "kaito.sh/machine"


class AcmeSettings(BaseModel):
    """Settings of the Acme plugin."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    region: str = "moon-1"
    """Acme region the instances live in (part of the providerID)."""
    gpus_per_node: int = 1
    """GPUs of every Acme instance."""
    instance_types: list[str] = ["acme.gpu.small", "Standard_NC6s_v3"]
    """Instance types Acme sells; anything else is InstanceTypeUnavailable."""


class AcmeProvisioner:
    name: ClassVar[str] = "acme"
    settings_model: ClassVar[type[AcmeSettings]] = AcmeSettings

    def __init__(self, settings: AcmeSettings | None = None):
        self.settings = settings or AcmeSettings()
        self.client: Client | None = None
        self.created: builtins.list[str] = []

    async def start(self, ctx: ProvisionerContext) -> None:
        self.client = ctx.client

    async def close(self) -> None:
        self.client = None

    def _name(self, machine: Any) -> str:
        return f"acme-{machine.name}"

    def _ref(self, node: dict[str, Any]) -> NodeRef:
        meta = node["metadata"]
        labels = meta.get("labels") or {}
        return NodeRef(provider_id=node["spec"]["providerID"], node_name=meta["name"], ready=True,
                       labels=labels, machine_name=labels.get(LABEL_MACHINE),
                       instance_type=labels.get("node.kubernetes.io/instance-type"),
                       created_at=parse_timestamp(meta.get("creationTimestamp")))

    async def create(self, machine: Any) -> NodeRef:
        assert self.client is not None
        if machine.spec.instance_type not in self.settings.instance_types:
            raise InstanceTypeUnavailableError(
                f"Acme does not sell {machine.spec.instance_type}; pick one of {self.settings.instance_types}")
        name = self._name(machine)
        existing = await self.client.get_or_none(NODE, name)
        if existing is not None:
            return self._ref(existing)
        gpus = str(self.settings.gpus_per_node)
        resources = {"cpu": "16", "memory": "128Gi", "pods": "110", "nvidia.com/gpu": gpus}
        manifest = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/hostname": name, "type": "kwok",
                                    **node_labels_for(machine, self.name)}},
            "spec": {"providerID": f"acme://{self.settings.region}/{machine.name}",
                     "taints": node_taints_for(machine)},
            "status": {"capacity": resources, "allocatable": dict(resources)},
        }
        try:
            node = await self.client.create(manifest, kind=NODE)
            self.created.append(name)
        except AlreadyExistsError:
            node = await self.client.get(NODE, name)
        return self._ref(node)

    async def get(self, machine: Any) -> NodeRef | None:
        assert self.client is not None
        node = await self.client.get_or_none(NODE, self._name(machine))
        return self._ref(node) if node is not None else None

    async def delete(self, machine: Any) -> None:
        assert self.client is not None
        await self.client.delete(NODE, self._name(machine), missing_ok=True)

    async def list(self) -> builtins.list[NodeRef]:
        assert self.client is not None
        nodes = await self.client.list(NODE, label_selector="kaito.sh/provisioner=acme")
        return [self._ref(n) for n in nodes.items]
