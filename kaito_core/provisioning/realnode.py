"""The ``realnode`` provisioner: a Machine becomes a real kubelet + containerd node (test kit).

Where ``simulated`` writes a Node object kwok animates, this one starts a
:class:`~kaito_core.testing.realnode.RealNode` named after the Machine (in the
private network namespace of a :class:`~kaito_core.testing.realnode.RealNodes`
handle), so its pods really run: init containers pull, probes probe, servers
answer. The node carries what the simulated one would: the instance type's
labels, ``accelerator: nvidia``, :func:`node_labels_for`'s labels (its Machine,
its Workspace, this provisioner), the Machine's taints and startup taints, and
``nvidia.com/gpu`` (the SKU catalog's count) as an extended resource.

Give it a handle (``RealNodeProvisioner(nodes=RealNodes(kubeconfig))``, then
``Operator.create(..., provisioner=it)``), or let it build one from
``settings.kubeconfig`` (the entry point's way; it then stops the handle on
:meth:`close`). ``settings.images`` (podman references) are imported into each
node after its containerd starts, before its kubelet does: only nodes this
provisioner makes get them, each once.

A node takes a while (containerd, image imports: minutes for a large image,
kubelet registration), so :meth:`create` starts it on the provisioner's own
thread and answers "no providerID yet" until it is Ready; the Machine reconciler
polls. Every call on the handle that starts or stops a process runs on that one
thread: the kubelets and containerds it starts die with it (parent-death
signal), so it lives as long as the provisioner. The image imports run beside
it, so that several nodes import at once. Needs root, like the nodes.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from kaito_presets import default_catalog
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_core.api.constants import GPU_RESOURCE, LABEL_INSTANCE_TYPE, LABEL_MACHINE
from kaito_core.api.machine import Machine
from kaito_core.provisioning.nodes import LABEL_PROVISIONER, node_labels_for, node_taints_for
from kaito_core.provisioning.protocol import (
    InstanceTypeInfo,
    InstanceTypeUnavailableError,
    NodeRef,
    ProvisionerContext,
    ProvisionerError,
)
from kaito_core.testing.realnode import NodeSpec, RealNodes

__all__ = ["PROVIDER_PREFIX", "RealNodeProvisioner", "RealNodeSettings"]

#: ``spec.providerID`` of the nodes: ``realnode://<node name>``.
PROVIDER_PREFIX = "realnode://"
_T = TypeVar("_T")


class RealNodeSettings(BaseSettings):
    """Settings of the ``realnode`` provisioner (environment: ``KAITO_REALNODE_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="KAITO_REALNODE_", use_attribute_docstrings=True,
                                      extra="forbid")

    kubeconfig: Path | None = None
    """The control plane the kubelets join (an apiserver on 127.0.0.1), when no handle is injected."""
    images: builtins.list[str] = Field(default_factory=builtins.list)
    """podman images imported into each node this provisioner makes (before its kubelet starts)."""
    node_name_prefix: str = ""
    """Prefix of the node names (``<prefix><machine name>``)."""
    start_timeout: float = Field(default=900.0, gt=0)
    """Seconds a node's kubelet may take to become Ready once started."""
    allow_unknown_instance_types: bool = False
    """Accept instance types the SKU catalog does not know (then 1 GPU)."""


class RealNodeProvisioner:
    """Makes real kubelet nodes through a :class:`RealNodes` handle. See the module docstring."""

    name: ClassVar[str] = "realnode"
    settings_model: ClassVar[type[BaseModel]] = RealNodeSettings  # the protocol's type: ClassVars are invariant

    def __init__(self, settings: RealNodeSettings | None = None, *, nodes: RealNodes | None = None):
        self.settings = settings or RealNodeSettings()
        self._nodes = nodes
        self._owns_nodes = nodes is None
        # One thread for every call on the handle: RealNodes is not thread-safe, and the processes a
        # node starts die with the thread that started them.
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaito-realnode")
        # Node starts run here, hopping onto the one thread for each step that starts a process: the
        # image imports (a minute or more each) of several nodes then overlap.
        self._starts = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="kaito-realnode-start")
        self._starting: dict[str, concurrent.futures.Future[None]] = {}
        self._created_at: dict[str, float] = {}
        self._images_loaded = False
        self._log: Any = None
        #: Seconds per node: ``start`` (create called -> Ready, images included), and the node's own timings.
        self.timings: dict[str, dict[str, float]] = {}

    @property
    def nodes(self) -> RealNodes:
        if self._nodes is None:
            raise RuntimeError("the realnode provisioner has no RealNodes handle (call start(ctx) first)")
        return self._nodes

    # -- lifecycle

    async def start(self, ctx: ProvisionerContext) -> None:
        self._log = ctx.logger
        if self._nodes is None:
            if self.settings.kubeconfig is None:
                raise ProvisionerError("the realnode provisioner needs a RealNodes handle or settings.kubeconfig "
                                       "(KAITO_REALNODE_KUBECONFIG): the control plane its kubelets join")
            kubeconfig = self.settings.kubeconfig
            self._nodes = await self._run(lambda: RealNodes(kubeconfig))
        if not self._images_loaded:
            await self._run(self._load_images)

    def _load_images(self) -> None:
        for ref in self.settings.images:
            self.nodes.load_image(ref)  # podman save, cached by image id; imported by each node's start
        self._images_loaded = True

    async def close(self) -> None:
        if self._owns_nodes and self._nodes is not None:
            await self._run(self._nodes.stop)
            self._nodes = None
        # the worker thread stays: an injected handle's nodes live on, and their processes with it

    async def _run(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.wrap_future(self._thread.submit(fn))

    # -- naming and shapes

    def node_name(self, machine: Machine) -> str:
        return f"{self.settings.node_name_prefix}{machine.name}"

    def _gpus(self, machine: Machine) -> int:
        instance_type = machine.spec.instance_type
        sku = default_catalog().find_sku(instance_type) if instance_type else None
        if sku is None:
            if self.settings.allow_unknown_instance_types:
                return 1
            raise InstanceTypeUnavailableError(
                f"instance type {instance_type!r} of Machine {machine.name} is not in the GPU SKU catalog; "
                f"use a known one or set allow_unknown_instance_types")
        return int(sku.gpu_count)

    def node_spec(self, machine: Machine) -> NodeSpec:
        """What the kubelet registers, as the simulated provisioner would label and taint it."""
        instance_type = machine.spec.instance_type or "unknown"
        labels = {
            "beta.kubernetes.io/instance-type": instance_type,
            LABEL_INSTANCE_TYPE: instance_type,
            "accelerator": "nvidia",
            **node_labels_for(machine, self.name),
        }
        return NodeSpec(self.node_name(machine), labels=labels, taints=node_taints_for(machine),
                        extended_resources={GPU_RESOURCE: str(self._gpus(machine))})

    def _ref(self, name: str, *, ready: bool) -> NodeRef:
        node = self.nodes.nodes.get(name)
        labels = dict(node.spec.labels) if node is not None else {}
        return NodeRef(provider_id=f"{PROVIDER_PREFIX}{name}" if ready else "", node_name=name,
                       instance_type=labels.get(LABEL_INSTANCE_TYPE), ready=ready, labels=labels,
                       machine_name=labels.get(LABEL_MACHINE), created_at=self._created_at.get(name),
                       message="" if ready else f"starting real node {name}: containerd, image imports, kubelet")

    def _mine(self, name: str, machine: Machine) -> bool:
        node = self.nodes.nodes.get(name)
        return node is not None and node.spec.labels.get(LABEL_MACHINE) == machine.name

    # -- the protocol

    async def create(self, machine: Machine) -> NodeRef:
        name = self.node_name(machine)
        future = self._starting.get(name)
        if future is None:
            if name in self.nodes.nodes:
                if not self._mine(name, machine):
                    raise ProvisionerError(f"a real node named {name} already exists and belongs to another "
                                           f"Machine; set node_name_prefix so the names do not collide")
                return self._ref(name, ready=True)
            spec = self.node_spec(machine)
            self._created_at[name] = time.time()
            future = self._starts.submit(self._start_node, spec)
            self._starting[name] = future
            if self._log is not None:
                self._log.info("real node starting", node=name, machine=machine.name)
        if not future.done():
            return self._ref(name, ready=False)
        del self._starting[name]
        error = future.exception()
        if error is not None:
            raise ProvisionerError(f"real node {name} did not start: {error}", retry_after=5.0)
        return self._ref(name, ready=True)

    def _on_thread(self, fn: Callable[[], _T]) -> _T:
        return self._thread.submit(fn).result()

    def _start_node(self, spec: NodeSpec) -> None:
        began = time.monotonic()
        nodes = self.nodes
        try:
            node = self._on_thread(lambda: nodes.begin(spec))
            node.import_images()
            self._on_thread(node.start_kubelet)
            nodes.settle(node, self.settings.start_timeout)
            self._on_thread(nodes.ensure_kube_proxy)
        except BaseException:
            if spec.name in nodes.nodes:  # half-started: take it away, a retry starts afresh
                nodes.keep_kubelet_log(nodes.nodes[spec.name])
                self._on_thread(lambda: nodes.remove_node(spec.name))
            raise
        self.timings[spec.name] = {"start": time.monotonic() - began, **node.timings}

    async def get(self, machine: Machine) -> NodeRef | None:
        name = self.node_name(machine)
        if name in self._starting:
            return self._ref(name, ready=False)
        if not self._mine(name, machine):
            return None
        return self._ref(name, ready=True)

    async def delete(self, machine: Machine) -> None:
        name = self.node_name(machine)
        future = self._starting.pop(name, None)
        if future is not None:
            with contextlib.suppress(Exception):  # a start in progress ends first (or fails)
                await asyncio.wrap_future(future)
        if not self._mine(name, machine):
            return
        await self._run(lambda: self.nodes.remove_node(name))
        self._created_at.pop(name, None)
        if self._log is not None:
            self._log.info("real node removed", node=name, machine=machine.name)

    async def list(self) -> builtins.list[NodeRef]:
        return [self._ref(name, ready=name not in self._starting) for name, node in self.nodes.nodes.items()
                if node.spec.labels.get(LABEL_PROVISIONER) == self.name]

    async def instance_types(self) -> builtins.list[InstanceTypeInfo]:
        return [InstanceTypeInfo(name=sku.name, gpu_count=sku.gpu_count, gpu_memory_gib=sku.gpu_memory / 2**30)
                for sku in default_catalog().skus]
