"""The ``simulated`` provisioner: the embedded default for local runs and tests.

It plays a cloud whose "instances" are Node objects it creates itself: after a
configurable delay, ``create`` writes a Node named after the Machine, with
providerID ``kwok://<node>``, the instance type's GPUs, CPUs and memory (from the
SKU catalog) as capacity, our labels, the Machine's nodeLabels, taints and
startup taints, and the annotation ``kwok.x-k8s.io/node: fake`` so kwok marks it
Ready and runs its pods. The Node's name is a function of the Machine's name, so
a repeated ``create`` (after a crash) finds the Node it made instead of a second one.

Failure injection for tests (all settings, all off by default): instance types
that fail with InsufficientCapacity or QuotaExceeded, a fraction of calls that
raise RetryableError, a slow launch, and instances that never register a Node.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import time
from collections import Counter
from typing import Any, ClassVar

from kaito_presets import GpuSku, default_catalog, format_quantity
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_core.api.constants import LABEL_INSTANCE_TYPE, LABEL_MACHINE
from kaito_core.api.machine import Machine
from kaito_core.engine.client import Client
from kaito_core.engine.errors import AlreadyExistsError
from kaito_core.engine.resources import NODE
from kaito_core.provisioning.nodes import LABEL_PROVISIONER, node_labels_for, node_taints_for, parse_timestamp
from kaito_core.provisioning.protocol import (
    InstanceTypeInfo,
    InstanceTypeUnavailableError,
    InsufficientCapacityError,
    NodeRef,
    ProvisionerContext,
    ProvisionerError,
    QuotaExceededError,
    RetryableError,
)

__all__ = ["KWOK_ANNOTATION", "SimulatedProvisioner", "SimulatedSettings"]

#: kwok manages (marks Ready, runs pods on) Nodes carrying this annotation.
KWOK_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}
_ALL = "*"


class SimulatedSettings(BaseSettings):
    """Settings of the ``simulated`` provisioner (environment: ``KAITO_SIMULATED_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="KAITO_SIMULATED_", use_attribute_docstrings=True,
                                      extra="forbid")

    launch_delay: float = Field(default=0.5, ge=0)
    """Seconds ``create`` takes before the Node appears, like a cloud's VM creation (a large
    value simulates a slow launch; the Machine reconciler's launch timeout cuts it short)."""
    register_nodes: bool = True
    """Create the Node object at all. False simulates instances that launch but never join
    the cluster (the reconciler's registration timeout then replaces them)."""
    insufficient_capacity: builtins.list[str] = Field(default_factory=builtins.list)
    """Instance types whose ``create`` fails with InsufficientCapacity (``"*"``: every type)."""
    quota_exceeded: builtins.list[str] = Field(default_factory=builtins.list)
    """Instance types whose ``create`` fails with QuotaExceeded (``"*"``: every type)."""
    retryable_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Fraction (0..1) of ``create`` calls that fail with a RetryableError before doing anything."""
    retryable_after: float = Field(default=1.0, gt=0)
    """The ``retry_after`` (seconds) of those injected RetryableErrors."""
    lost_answer_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Fraction (0..1) of ``create`` calls that launch the node and then fail with a RetryableError
    anyway, as when a cloud API did the work but its answer was lost (a timeout, a dropped
    connection): the caller must find the node on its next try, not launch a second one."""
    seed: int | None = None
    """Seed of the random draw behind ``retryable_error_rate`` (None: not reproducible)."""
    allow_unknown_instance_types: bool = False
    """Accept instance types the SKU catalog does not know (then 1 GPU, 8 CPUs, 64Gi); when False
    they fail with InstanceTypeUnavailable."""
    node_name_prefix: str = ""
    """Prefix of the Node names (``<prefix><machine name>``)."""
    pods: int = Field(default=110, ge=1)
    """The ``pods`` capacity of each Node."""


def _matches(instance_type: str, patterns: builtins.list[str]) -> bool:
    wanted = instance_type.lower()
    return any(p == _ALL or p.lower() == wanted for p in patterns)


class SimulatedProvisioner:
    """Makes Node objects kwok brings to life. See the module docstring."""

    name: ClassVar[str] = "simulated"
    settings_model: ClassVar[type[SimulatedSettings]] = SimulatedSettings

    def __init__(self, settings: SimulatedSettings | None = None):
        self.settings = settings or SimulatedSettings()
        self._client: Client | None = None
        self._log: Any = None
        self._rng = random.Random(self.settings.seed)
        self._phantoms: dict[str, NodeRef] = {}
        #: How often each verb was called (tests read it).
        self.calls: Counter[str] = Counter()

    # -- lifecycle

    async def start(self, ctx: ProvisionerContext) -> None:
        self._client = ctx.client
        self._log = ctx.logger
        await self.client.list_page(NODE, limit=1)  # fails early without permission to read Nodes

    async def close(self) -> None:
        self._client = None

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the simulated provisioner was not started (call start(ctx) first)")
        return self._client

    # -- naming and shapes

    def node_name(self, machine: Machine) -> str:
        """The Node made for ``machine``: a pure function of its name."""
        return f"{self.settings.node_name_prefix}{machine.name}"

    def _sku(self, machine: Machine) -> GpuSku | None:
        instance_type = machine.spec.instance_type
        sku = default_catalog().find_sku(instance_type) if instance_type else None
        if sku is None and not self.settings.allow_unknown_instance_types:
            known = ", ".join(default_catalog().sku_names()[:8])
            raise InstanceTypeUnavailableError(
                f"instance type {instance_type!r} of Machine {machine.name} is not in the GPU SKU catalog; "
                f"use a known one (e.g. {known}, ...) or set allow_unknown_instance_types")
        return sku

    def node_manifest(self, machine: Machine, sku: GpuSku | None) -> dict[str, Any]:
        """The Node object for ``machine`` (capacity from the SKU catalog)."""
        name = self.node_name(machine)
        gpus, cpus, memory = (sku.gpu_count, sku.vcpus, format_quantity(sku.memory)) if sku else (1, 8, "64Gi")
        resources = {"cpu": str(cpus), "memory": memory, "pods": str(self.settings.pods),
                     "nvidia.com/gpu": str(gpus), "ephemeral-storage": "500Gi"}
        instance_type = machine.spec.instance_type or "unknown"
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/instance-type": instance_type,
            LABEL_INSTANCE_TYPE: instance_type,
            "type": "kwok",
            "accelerator": "nvidia",
            **node_labels_for(machine, self.name),
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": dict(KWOK_ANNOTATION)},
            "spec": {"providerID": f"kwok://{name}", "taints": node_taints_for(machine)},
            "status": {"capacity": resources, "allocatable": dict(resources)},
        }

    @staticmethod
    def _ref(node: dict[str, Any]) -> NodeRef:
        meta = node.get("metadata") or {}
        labels = meta.get("labels") or {}
        return NodeRef(
            provider_id=str((node.get("spec") or {}).get("providerID") or f"kwok://{meta.get('name')}"),
            node_name=meta.get("name"),
            instance_type=labels.get(LABEL_INSTANCE_TYPE),
            ready=True,
            labels=dict(labels),
            machine_name=labels.get(LABEL_MACHINE),
            created_at=parse_timestamp(meta.get("creationTimestamp")),
        )

    # -- the protocol

    async def create(self, machine: Machine) -> NodeRef:
        self.calls["create"] += 1
        if self.settings.retryable_error_rate and self._rng.random() < self.settings.retryable_error_rate:
            raise RetryableError(f"the simulated cloud API failed transiently while launching Machine "
                                 f"{machine.name} (injected: retryable_error_rate); retrying",
                                 after=self.settings.retryable_after)
        name = self.node_name(machine)
        if name in self._phantoms:
            return self._phantoms[name]
        existing = await self.client.get_or_none(NODE, name)
        if existing is not None:
            return self._adopt(machine, existing)
        instance_type = machine.spec.instance_type or ""
        if _matches(instance_type, self.settings.insufficient_capacity):
            raise InsufficientCapacityError(
                f"the simulated cloud has no capacity for {instance_type} right now (injected: "
                f"insufficient_capacity); kaito keeps retrying, or pick another instance type")
        sku = self._sku(machine)
        if _matches(instance_type, self.settings.quota_exceeded):
            family = sku.quota_family if sku else "its family"
            raise QuotaExceededError(
                f"the quota for {family} does not allow another {instance_type} (injected: quota_exceeded); "
                f"ask for a quota increase or pick another instance type")
        if self.settings.launch_delay:
            await asyncio.sleep(self.settings.launch_delay)
        if not self.settings.register_nodes:
            ref = NodeRef(provider_id=f"kwok://{name}", instance_type=instance_type, machine_name=machine.name,
                          labels=node_labels_for(machine, self.name), created_at=time.time(),
                          message="the simulated instance runs but will never register a Node "
                                  "(register_nodes is false)")
            self._phantoms[name] = ref
            return ref
        try:
            node = await self.client.create(self.node_manifest(machine, sku), kind=NODE)
            self.calls["nodes_created"] += 1
        except AlreadyExistsError:
            node = await self.client.get(NODE, name)
            return self._adopt(machine, node)
        if self.settings.lost_answer_rate and self._rng.random() < self.settings.lost_answer_rate:
            self.calls["answers_lost"] += 1
            raise RetryableError(f"the simulated cloud launched Machine {machine.name}'s node but the answer was "
                                 "lost (injected: lost_answer_rate); retrying", after=self.settings.retryable_after)
        if self._log is not None:
            self._log.info("simulated node created", node=name, machine=machine.name, instance_type=instance_type)
        return self._ref(node)

    def _adopt(self, machine: Machine, node: dict[str, Any]) -> NodeRef:
        meta = node.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(LABEL_MACHINE)
        if owner != machine.name:
            raise ProvisionerError(
                f"a Node named {meta.get('name')} already exists and belongs to {owner or 'no Machine'}; "
                f"delete it or set node_name_prefix so the simulated provisioner's names do not collide")
        if meta.get("deletionTimestamp"):
            raise RetryableError(f"the simulated node {meta.get('name')} is still being deleted", after=1.0)
        return self._ref(node)

    async def get(self, machine: Machine) -> NodeRef | None:
        self.calls["get"] += 1
        name = self.node_name(machine)
        if name in self._phantoms:
            return self._phantoms[name]
        node = await self.client.get_or_none(NODE, name)
        if node is None or ((node.get("metadata") or {}).get("labels") or {}).get(LABEL_MACHINE) != machine.name:
            return None
        return self._ref(node)

    async def delete(self, machine: Machine) -> None:
        self.calls["delete"] += 1
        name = self.node_name(machine)
        self._phantoms.pop(name, None)
        node = await self.client.get_or_none(NODE, name)
        if node is None or ((node.get("metadata") or {}).get("labels") or {}).get(LABEL_MACHINE) != machine.name:
            return
        await self.client.delete(NODE, name, uid=(node.get("metadata") or {}).get("uid"), missing_ok=True)

    async def list(self) -> builtins.list[NodeRef]:
        nodes = await self.client.list(NODE, label_selector=f"{LABEL_PROVISIONER}={self.name}")
        return [self._ref(node) for node in nodes.items] + builtins.list(self._phantoms.values())

    async def instance_types(self) -> builtins.list[InstanceTypeInfo]:
        unavailable = self.settings.insufficient_capacity + self.settings.quota_exceeded
        return [InstanceTypeInfo(name=sku.name, gpu_count=sku.gpu_count, gpu_memory_gib=sku.gpu_memory / 2**30,
                                 available=not _matches(sku.name, unavailable),
                                 reason="injected failure" if _matches(sku.name, unavailable) else "")
                for sku in default_catalog().skus]
