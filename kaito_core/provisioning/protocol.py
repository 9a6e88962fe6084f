"""The provisioner plugin interface: how kaito-core asks a cloud (or a cluster) for GPU nodes.

Modelled on Karpenter's CloudProvider, cut to what the Machine reconciler needs.
A plugin is a class registered under the ``kaito.provisioners`` entry-point
group. The registry instantiates it with its settings (a pydantic model the
plugin declares as ``settings_model``) and calls :meth:`Provisioner.start` once
with a :class:`ProvisionerContext`.

Contract, in the reconciler's words:

* ``create(machine)`` is idempotent per Machine: after a crash the reconciler
  calls it again for the same Machine, and it must return the node it already
  made (or is making), never a second one. Derive every provider-side name from
  the Machine's name.
* ``get(machine)`` returns ``None`` when nothing exists for the Machine.
* ``delete(machine)`` is idempotent: "already gone" is success.
* ``list()`` returns every node this plugin created (carrying our labels), for
  garbage collection of nodes no Machine owns.
* Failures are raised as the typed errors below; anything else is treated as a
  transient error and retried with backoff.
* Every node a plugin makes carries the labels of :func:`node_labels_for`
  (``kaito.sh/machine`` above all): they attribute a node to its Machine.

Optional extras a plugin may offer (the reconciler looks for them with ``getattr``,
so a plugin without them still satisfies the protocol):

* ``async def instance_types(self) -> list[InstanceTypeInfo]`` (see
  :class:`SupportsInstanceTypes`), for validation and sizing;
* ``keeps_nodes: ClassVar[bool] = True`` for plugins that hand out nodes they do
  not own (``byo``): the reconciler then neither cordons nor deletes the Node
  object when the Machine goes, and leaves releasing it to ``delete``.

``delete`` may be called with a Machine the garbage collector synthesized from a
:class:`NodeRef` (only ``metadata.name``, its labels and ``spec.instanceType`` set)
for a node whose Machine no longer exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from kaito_core.api.conditions import MachineReason

if TYPE_CHECKING:
    import structlog

    from kaito_core.api.machine import Machine

__all__ = [
    "InstanceTypeInfo",
    "InstanceTypeUnavailableError",
    "InsufficientCapacityError",
    "NodeRef",
    "Provisioner",
    "ProvisionerContext",
    "ProvisionerError",
    "ProvisionerNotFoundError",
    "ProvisionerSettings",
    "QuotaExceededError",
    "RetryableError",
    "SupportsInstanceTypes",
]


@dataclass(frozen=True)
class NodeRef:
    """What a provisioner knows about the node it made for a Machine."""

    provider_id: str
    """The Node's ``spec.providerID`` once known (e.g. ``azure:///subscriptions/...``)."""
    node_name: str | None = None
    """The Node's name, when the provider knows it already."""
    instance_type: str | None = None
    ready: bool = False
    """True when the provider considers the node provisioned (the Machine reconciler
    still waits for the Node object to be Ready and report GPUs)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Provider-side labels/tags, used to attribute leaked nodes to Machines."""
    machine_name: str | None = None
    """The Machine this node was made for, when the provider recorded it."""
    created_at: float | None = None
    """Unix time the provider created it (garbage collection keeps a grace period)."""
    message: str = ""
    """The provider's own account of progress (e.g. a NodeClaim's conditions), shown in the
    Machine's conditions while the reconciler waits."""


@dataclass(frozen=True)
class InstanceTypeInfo:
    """An instance type as the provider offers it (optional, for validation and sizing)."""

    name: str
    gpu_count: int
    gpu_memory_gib: float
    available: bool = True
    reason: str = ""


class ProvisionerError(Exception):
    """Base of the typed provisioner errors. ``reason`` becomes the Machine condition's reason
    (a :class:`~kaito_core.api.MachineReason` for ours; a plugin's own error may bring its own
    CamelCase string); the message is for a person: what is wrong and what to do."""

    reason: ClassVar[str] = MachineReason.PROVISIONER_ERROR
    retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after


class InsufficientCapacityError(ProvisionerError):
    """The provider has no capacity for the instance type right now (retry later or elsewhere)."""

    reason: ClassVar[str] = MachineReason.INSUFFICIENT_CAPACITY
    retry_after = 60.0


class QuotaExceededError(ProvisionerError):
    """The subscription/account quota does not allow another node of this type."""

    reason: ClassVar[str] = MachineReason.QUOTA_EXCEEDED
    retry_after = 300.0


class InstanceTypeUnavailableError(ProvisionerError):
    """The instance type does not exist, or is restricted, in this region/zone."""

    reason: ClassVar[str] = MachineReason.INSTANCE_TYPE_UNAVAILABLE
    retry_after = 600.0


class ProvisionerNotFoundError(ProvisionerError):
    """The provider has no node for this Machine."""

    reason: ClassVar[str] = MachineReason.NOT_FOUND


class RetryableError(ProvisionerError):
    """A transient failure; retry after ``retry_after`` seconds."""

    reason: ClassVar[str] = MachineReason.RETRYABLE

    def __init__(self, message: str, *, after: float = 5.0):
        super().__init__(message, retry_after=after)


@dataclass
class ProvisionerContext:
    """What kaito-core hands a plugin on start.

    ``client`` is the engine's Kubernetes client (``kaito_core.engine.Client``),
    for plugins that create Kubernetes objects (NodeClaims, simulated Nodes) or
    look Nodes up. ``logger`` is bound with the plugin's name.
    """

    client: Any
    logger: structlog.typing.FilteringBoundLogger | Any
    namespace: str = "kaito-system"
    """The namespace the controller runs in (for plugins that keep state there)."""
    install: Any = None
    """The operator install's :class:`~kaito_core.provisioning.identity.InstallIdentity` (None when
    the embedder gave none). Machines carry its value as ``kaito.sh/install``; a plugin that tags
    provider resources copies it from there."""
    write_fence: Callable[[str, str], None] | None = None
    """The leader's write fence (under leader election): call it with (method, path) right before
    sending a provider write (create, delete) and let what it raises stop the write; a plugin
    on aiohttp checks as the bytes leave with ``kaito_core.engine.transport.SendGate``. A leader
    paused past its lease then resumed must not create or delete cloud resources: the standby
    that took over does."""
    extra: dict[str, Any] = field(default_factory=dict)


class ProvisionerSettings(BaseModel):
    """Base of a plugin's settings; subclass it (or pydantic-settings' BaseSettings)."""


@runtime_checkable
class Provisioner(Protocol):
    """A source of GPU nodes. See the module docstring for the contract."""

    name: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]

    async def start(self, ctx: ProvisionerContext) -> None:
        """Check prerequisites (CRDs present, credentials valid); raise with a clear message."""
        ...

    async def create(self, machine: Machine) -> NodeRef:
        """Start (or find) the node for ``machine``; idempotent per Machine."""
        ...

    async def get(self, machine: Machine) -> NodeRef | None:
        """The node for ``machine``, or None when there is none."""
        ...

    async def delete(self, machine: Machine) -> None:
        """Remove the node for ``machine``; gone already is success."""
        ...

    async def list(self) -> list[NodeRef]:
        """Every node this plugin made (for leak collection)."""
        ...

    async def close(self) -> None:
        """Release clients and connections."""
        ...


@runtime_checkable
class SupportsInstanceTypes(Protocol):
    """The optional ``instance_types()`` extra: what the provider offers, for validation and sizing."""

    async def instance_types(self) -> list[InstanceTypeInfo]:
        """Every instance type the provider can launch, with GPU count and memory."""
        ...
