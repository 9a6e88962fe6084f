"""The AKS provisioner: one AKS agent pool (count 1) per Machine, what Azure/gpu-provisioner does for Kaito.

* ``create`` derives the pool name from the Machine (:func:`~kaito_provisioner_aks.naming.pool_name`),
  GETs it first, and only PUTs when it does not exist, after a SKU/quota check;
  a pool found still ``Creating`` (a controller restart mid-create) is waited for,
  never created twice. An "operation in progress" answer to the PUT counts as creating.
  The PUT is never replayed blindly (see :mod:`kaito_provisioner_aks.clients`): after one whose answer
  was lost (broken connection, timeout, 5xx) the pool is GET first and adopted when it is there; the
  PUT is sent again only when the GET shows no pool.
* The node of a pool is found by the label ``kubernetes.azure.com/agentpool=<pool>``;
  its ``spec.providerID`` is what ``create``/``get`` report.
* ``delete`` is ``begin_delete`` until gone; 404 is success.
* ``list`` reports the pools this plugin made: our provisioner label, a name derived from the
  Machine it names, and (for the install identity) the ``kaito-install`` ARM tag written at
  create agreeing with the ``kaito.sh/install`` node label. kaito-core's one leak collector
  (``kaito_core.controllers.machine.gc``) deletes, through ``delete``, the listed pools of its own
  install whose Machine is gone; the plugin keeps no collector of its own.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import datetime
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.containerservice.aio import ContainerServiceClient
from azure.mgmt.containerservice.models import AgentPool, AgentPoolManagedClusterAgentPoolProfileProperties
from pydantic import BaseModel

from kaito_core.api import (
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    LABEL_INSTALL,
    LABEL_MACHINE,
    LABEL_MACHINE_TYPE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
)
from kaito_core.provisioning import (
    LABEL_PROVISIONER,
    InstanceTypeInfo,
    InstanceTypeUnavailableError,
    NodeRef,
    ProvisionerContext,
    ProvisionerError,
    RetryableError,
)
from kaito_core.provisioning.identity import INSTALL_TAG
from kaito_provisioner_aks.clients import client_kwargs
from kaito_provisioner_aks.credentials import make_credential
from kaito_provisioner_aks.errors import is_operation_in_progress, map_arm_error
from kaito_provisioner_aks.machine import (
    IMAGE_FAMILY_ANNOTATION,
    OS_DISK_ANNOTATION,
    MachineView,
    parse_quantity_gib,
    view_machine,
)
from kaito_provisioner_aks.naming import pool_name
from kaito_provisioner_aks.settings import AKSSettings
from kaito_provisioner_aks.skus import SkuCatalog, SkuInfo

__all__ = [
    "AGENTPOOL_LABEL",
    "CREATED_LABEL",
    "GPU_TAINT",
    "MACHINE_LABEL",
    "PROVISIONER_LABEL",
    "AKSProvisioner",
]

AGENTPOOL_LABEL = "kubernetes.azure.com/agentpool"
# Our labels and taint are kaito-core's (its public API); only their ARM spelling is ours.
MACHINE_LABEL = LABEL_MACHINE
PROVISIONER_LABEL = LABEL_PROVISIONER
#: On an agent pool: when we created it (label values may not hold ':', so not RFC 3339).
CREATED_LABEL = "kaito.sh/creation-timestamp"
#: kaito-core's GPU taint as ARM writes node taints (``sku=gpu:NoSchedule``).
GPU_TAINT = f"{GPU_TAINT_KEY}={GPU_TAINT_VALUE}:{GPU_TAINT_EFFECT}"
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H-%M-%SZ"  # label values may not hold ':'
_OS_SKUS = {"ubuntu": "Ubuntu", "azurelinux": "AzureLinux", "mariner": "AzureLinux", "cblmariner": "AzureLinux"}
_RESERVED_LABEL_DOMAINS = ("kubernetes.io", "k8s.io", "kubernetes.azure.com")
_MIN_OS_DISK_GB, _MAX_OS_DISK_GB = 30, 2048
_SUCCEEDED, _FAILED, _DELETING, _CANCELED = "succeeded", "failed", "deleting", "canceled"


def _timestamp(now: float | None = None) -> str:
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)
    return moment.strftime(_TIMESTAMP_FORMAT)


def _parse_timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = datetime.datetime.strptime(value, _TIMESTAMP_FORMAT).replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
    return parsed.timestamp()


def _reserved(key: str) -> bool:
    domain = key.split("/", 1)[0] if "/" in key else ""
    return any(domain == d or domain.endswith("." + d) for d in _RESERVED_LABEL_DOMAINS)


def _taint_string(taint: Mapping[str, Any]) -> str:
    key, value, effect = taint.get("key", ""), taint.get("value"), taint.get("effect", "NoSchedule")
    return f"{key}={value}:{effect}" if value else f"{key}:{effect}"


def _state(pool: AgentPool) -> str:
    return str(pool.provisioning_state or "").lower()


def _ambiguous(exc: HttpResponseError) -> bool:
    """An answer to a PUT that does not say whether ARM carried it out: 408, 5xx, or no status at all."""
    if isinstance(exc, ClientAuthenticationError):
        return False
    status = exc.status_code or 0
    return status in (0, 408) or status >= 500


def _transitional(pool: AgentPool) -> bool:
    """Creating, Updating, Scaling...: not settled, not being deleted."""
    return _state(pool) not in (_SUCCEEDED, _FAILED, _CANCELED, _DELETING)


class AKSProvisioner:
    """Provisioner plugin ``aks``: GPU nodes as single-node AKS agent pools."""

    name: ClassVar[str] = "aks"
    settings_model: ClassVar[type[BaseModel]] = AKSSettings

    def __init__(self, settings: AKSSettings | None = None, *, credential: AsyncTokenCredential | None = None,
                 **sdk_kwargs: Any):
        """``credential`` and ``sdk_kwargs`` (extra Azure SDK client keywords) are for embedding and tests;
        the registry passes only the settings."""
        self.settings = settings if settings is not None else AKSSettings()
        self._credential = credential
        self._owns_credential = credential is None
        self._sdk_kwargs = sdk_kwargs
        self._aks: ContainerServiceClient | None = None
        self._compute: ComputeManagementClient | None = None
        self._catalog: SkuCatalog | None = None
        self._kube: Any = None
        self._log: Any = None
        self._fence: Callable[[str, str], None] | None = None
        self.node_resource_group: str | None = self.settings.azure_node_resource_group

    # -- lifecycle

    def _connect(self) -> None:
        if self._aks is not None:
            return
        if self._credential is None:
            self._credential = make_credential(self.settings)
        # one set of keywords per client: a pipeline policy (the retry policy) belongs to one pipeline;
        # the agent-pool client is the one that writes, so it carries the leader's write fence
        fenced = client_kwargs(self.settings, write_fence=self._fence)
        self._aks = ContainerServiceClient(self._credential, self.settings.arm_subscription_id,
                                           base_url=self.settings.arm_base_url, **{**fenced, **self._sdk_kwargs})
        self._compute = ComputeManagementClient(self._credential, self.settings.arm_subscription_id,
                                                base_url=self.settings.arm_base_url,
                                                **{**client_kwargs(self.settings), **self._sdk_kwargs})
        self._catalog = SkuCatalog(self._compute, self.settings.location, ttl=self.settings.aks_sku_cache_seconds)

    async def start(self, ctx: ProvisionerContext) -> None:
        """Connect, and check that the credentials can read the cluster (a clear error when they cannot)."""
        self._kube = ctx.client
        self._log = ctx.logger
        self._fence = ctx.write_fence
        self._connect()
        s = self.settings
        try:
            cluster = await self.aks.managed_clusters.get(s.arm_resource_group, s.azure_cluster_name)
        except ResourceNotFoundError as exc:
            raise ProvisionerError(
                f"AKS cluster {s.azure_cluster_name!r} not found in resource group {s.arm_resource_group!r} of "
                f"subscription {s.arm_subscription_id}: check AZURE_CLUSTER_NAME, ARM_RESOURCE_GROUP and "
                "ARM_SUBSCRIPTION_ID") from exc
        except AzureError as exc:
            raise map_arm_error(exc, action=f"reading AKS cluster {s.azure_cluster_name}") from exc
        if cluster.properties is not None and cluster.properties.node_resource_group:
            self.node_resource_group = cluster.properties.node_resource_group
        self._info("aks provisioner started", cluster=s.azure_cluster_name, location=s.location,
                   node_resource_group=self.node_resource_group)

    async def close(self) -> None:
        for client in (self._aks, self._compute):
            if client is not None:
                await client.close()
        self._aks = self._compute = None
        if self._owns_credential and self._credential is not None:
            await self._credential.close()
            self._credential = None

    @property
    def aks(self) -> ContainerServiceClient:
        self._connect()
        assert self._aks is not None
        return self._aks

    @property
    def catalog(self) -> SkuCatalog:
        self._connect()
        assert self._catalog is not None
        return self._catalog

    def _info(self, event: str, **fields: Any) -> None:
        if self._log is not None:
            self._log.info(event, **fields)

    # -- the agent pool we would make

    def pool_name(self, machine: Any) -> str:
        view = machine if isinstance(machine, MachineView) else view_machine(machine)
        return pool_name(view.name)

    def _os_sku(self, view: MachineView) -> str:
        family = view.annotations.get(IMAGE_FAMILY_ANNOTATION, "").strip().lower()
        if not family:
            return "Ubuntu"
        if family not in _OS_SKUS:
            raise ProvisionerError(
                f"Machine {view.name}: annotation {IMAGE_FAMILY_ANNOTATION}={family!r} is not an AKS node image "
                "family; use ubuntu or azurelinux")
        return _OS_SKUS[family]

    def _os_disk_gb(self, view: MachineView) -> int:
        """From the annotation, else a ``storage``/``ephemeral-storage`` request, else the default; clamped."""
        size = self.settings.aks_default_os_disk_gb
        try:
            if raw := view.annotations.get(OS_DISK_ANNOTATION):
                size = int(raw)
            elif raw := view.requests.get("storage") or view.requests.get("ephemeral-storage"):
                size = parse_quantity_gib(raw)
        except ValueError as exc:
            raise ProvisionerError(f"Machine {view.name}: cannot read the OS disk size: {exc}") from exc
        return max(_MIN_OS_DISK_GB, min(_MAX_OS_DISK_GB, size))

    def pool_body(self, view: MachineView, vm_size: str, now: float | None = None) -> AgentPool:
        labels: dict[str, str] = {k: v for k, v in {**view.labels, **view.node_labels}.items() if not _reserved(k)}
        created = _timestamp(now)
        labels.update({
            LABEL_MACHINE_TYPE: "gpu",
            LABEL_MACHINE: view.name,
            LABEL_PROVISIONER: self.name,
            CREATED_LABEL: created,
        })
        for key in (LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE):
            if key in view.labels:
                labels[key] = view.labels[key]
        taints: list[str] = [GPU_TAINT]
        for taint in [*view.taints, *view.startup_taints]:
            text = _taint_string(taint)
            if text not in taints:
                taints.append(text)
        properties = AgentPoolManagedClusterAgentPoolProfileProperties(
            count=1,
            vm_size=vm_size,
            type_properties_type="VirtualMachineScaleSets",
            mode="User",
            os_type="Linux",
            os_sku=self._os_sku(view),
            os_disk_size_gb=self._os_disk_gb(view),
            node_labels=labels,
            node_taints=taints,
            tags={"kaito-machine": view.name, "kaito-provisioner": self.name, "kaito-created": created,
                  **({INSTALL_TAG: view.labels[LABEL_INSTALL]} if LABEL_INSTALL in view.labels else {})},
            availability_zones=list(self.settings.aks_zones) or None,
        )
        return AgentPool(properties=properties)

    # -- ARM calls

    async def _get_pool(self, name: str) -> AgentPool | None:
        s = self.settings
        try:
            return await self.aks.agent_pools.get(s.arm_resource_group, s.azure_cluster_name, name)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise map_arm_error(exc, action=f"reading agent pool {name}") from exc

    async def _wait_pool(self, name: str, deadline: float) -> AgentPool | None:
        """GET until the pool leaves its transitional state (a create we did not start, or lost track of)."""
        while True:
            pool = await self._get_pool(name)
            if pool is None or not _transitional(pool):
                return pool
            if time.monotonic() >= deadline:
                raise RetryableError(f"agent pool {name} is still {pool.provisioning_state} after "
                                     f"{self.settings.aks_create_timeout_seconds:.0f}s; will check again",
                                     after=self.settings.aks_poll_interval_seconds)
            await asyncio.sleep(self.settings.aks_poll_interval_seconds)

    async def _check_sizes(self, view: MachineView) -> tuple[str, SkuInfo]:
        sizes = view.instance_types()
        if not sizes:
            raise InstanceTypeUnavailableError(f"Machine {view.name} names no instance type (spec.instanceType)")
        last: ProvisionerError | None = None
        for size in sizes:
            try:
                return size, await self.catalog.check(size, zones=self.settings.aks_zones)
            except ProvisionerError as exc:
                last = exc
        assert last is not None
        raise last

    async def _begin_create(self, name: str, view: MachineView, deadline: float, *, wait: bool = True
                            ) -> AgentPool | None:
        vm_size, info = await self._check_sizes(view)
        body = self.pool_body(view, vm_size)
        s = self.settings
        action = f"creating agent pool {name} ({vm_size}) for Machine {view.name}"
        resent = 0
        while True:
            try:
                poller = await self.aks.agent_pools.begin_create_or_update(
                    s.arm_resource_group, s.azure_cluster_name, name, body)
                break
            except HttpResponseError as exc:
                if is_operation_in_progress(exc):
                    self._info("agent pool create already in progress", pool=name, machine=view.name)
                    return await self._wait_pool(name, deadline) if wait else await self._get_pool(name)
                if not _ambiguous(exc):
                    raise map_arm_error(exc, action=action) from exc
                failure: AzureError = exc
            except AzureError as exc:
                failure = exc
            # No answer, or one that does not say whether ARM ran the PUT (the SDK does not replay a PUT:
            # clients.NoBlindReplayRetryPolicy). Look before sending it again: the name is deterministic.
            self._info("agent pool create answer lost; looking for the pool", pool=name, machine=view.name,
                       error=f"{type(failure).__name__}: {failure}"[:300])
            pool = await self._get_pool(name)  # fails with a RetryableError; the next create() GETs first
            if pool is not None:
                if _state(pool) not in (_FAILED, _CANCELED, _DELETING):
                    self.catalog.reserve(info)
                self._info("agent pool found after a lost create answer; adopting it", pool=name,
                           machine=view.name, state=pool.provisioning_state)
                return await self._wait_pool(name, deadline) if wait and _transitional(pool) else pool
            resent += 1
            if resent > s.arm_retry_total or time.monotonic() >= deadline:
                raise map_arm_error(failure, action=action) from failure
            await asyncio.sleep(min(float(s.arm_retry_backoff_max), s.arm_retry_backoff_factor * 2 ** resent))
        self.catalog.reserve(info)
        self._info("agent pool create started", pool=name, machine=view.name, vm_size=vm_size)
        if not wait:  # the poller only polls when awaited: dropping it leaves nothing running
            return await self._get_pool(name)
        try:
            return await asyncio.wait_for(poller.result(), timeout=max(1.0, deadline - time.monotonic()))
        except TimeoutError as exc:
            raise RetryableError(f"{action}: not done after {s.aks_create_timeout_seconds:.0f}s; will check again",
                                 after=s.aks_poll_interval_seconds) from exc
        except AzureError as exc:
            raise map_arm_error(exc, action=action) from exc

    async def _delete_pool(self, name: str) -> None:
        s = self.settings
        action = f"deleting agent pool {name}"
        try:
            poller = await self.aks.agent_pools.begin_delete(s.arm_resource_group, s.azure_cluster_name, name)
            await asyncio.wait_for(poller.result(), timeout=s.aks_create_timeout_seconds)
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            if exc.status_code == 404:
                return
            if is_operation_in_progress(exc):
                raise RetryableError(f"{action}: another operation is in progress; will retry",
                                     after=s.aks_poll_interval_seconds) from exc
            raise map_arm_error(exc, action=action) from exc
        except TimeoutError as exc:
            raise RetryableError(f"{action}: not gone after {s.aks_create_timeout_seconds:.0f}s",
                                 after=s.aks_poll_interval_seconds) from exc
        except AzureError as exc:
            raise map_arm_error(exc, action=action) from exc
        self._info("agent pool gone", pool=name)

    # -- Kubernetes side

    async def _nodes(self, selector: str) -> list[dict[str, Any]]:
        if self._kube is None:
            return []
        body = await self._kube.request("GET", "/api/v1/nodes", query=[("labelSelector", selector)])
        items: list[dict[str, Any]] = (body or {}).get("items") or []
        return items

    async def _node_of_pool(self, name: str) -> dict[str, Any] | None:
        for node in await self._nodes(f"{AGENTPOOL_LABEL}={quote(name, safe='')}"):
            if (node.get("spec") or {}).get("providerID"):
                return node
        return None

    async def _wait_node(self, name: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.settings.aks_node_wait_seconds
        while True:
            node = await self._node_of_pool(name)
            if node is not None or self._kube is None or time.monotonic() >= deadline:
                return node
            await asyncio.sleep(min(1.0, self.settings.aks_poll_interval_seconds))

    def _ref(self, pool: AgentPool, node: Mapping[str, Any] | None) -> NodeRef:
        labels = dict(pool.node_labels or {})
        return NodeRef(
            provider_id=str(((node or {}).get("spec") or {}).get("providerID") or ""),
            node_name=((node or {}).get("metadata") or {}).get("name"),
            instance_type=pool.vm_size,
            ready=_state(pool) == _SUCCEEDED,
            labels=labels,
            machine_name=labels.get(LABEL_MACHINE),
            created_at=_parse_timestamp(labels.get(CREATED_LABEL)),
        )

    def _being_deleted(self, name: str, view: MachineView) -> RetryableError:
        return RetryableError(f"agent pool {name} for Machine {view.name} is being deleted; a new one is made "
                              "once it is gone", after=self.settings.aks_poll_interval_seconds)

    def _pending(self, pool: AgentPool) -> NodeRef:
        """A create in progress: no providerID yet; the reconciler calls again (AKS_WAIT_FOR_CREATE=false)."""
        ref = self._ref(pool, None)
        message = (f"agent pool {pool.name} ({pool.vm_size}) is {pool.provisioning_state} in cluster "
                   f"{self.settings.azure_cluster_name}")
        return dataclasses.replace(ref, message=message)

    # -- the protocol

    async def create(self, machine: Any) -> NodeRef:
        view = view_machine(machine)
        name = pool_name(view.name)
        deadline = time.monotonic() + self.settings.aks_create_timeout_seconds
        wait = self.settings.aks_wait_for_create
        pool = await self._get_pool(name)
        if pool is not None and _state(pool) == _DELETING:
            raise self._being_deleted(name, view)
        if pool is not None and _transitional(pool):
            if not wait:
                return self._pending(pool)
            self._info("agent pool already being created; waiting for it", pool=name, machine=view.name,
                       state=pool.provisioning_state)
            pool = await self._wait_pool(name, deadline)
        if pool is None:
            pool = await self._begin_create(name, view, deadline, wait=wait)
            if pool is None:  # it vanished while we waited: a delete won the race
                raise RetryableError(f"agent pool {name} disappeared while being created; will retry", after=5.0)
            if _transitional(pool):
                return self._pending(pool)
        if _state(pool) == _DELETING:
            raise self._being_deleted(name, view)
        if _state(pool) in (_FAILED, _CANCELED):
            detail = ""
            status = getattr(pool.properties, "status", None) if pool.properties is not None else None
            error = getattr(status, "provisioning_error", None)
            if error is not None and getattr(error, "code", None):
                detail = f": {error.code}: {error.message}"
            await self._delete_pool(name)
            raise RetryableError(f"agent pool {name} ({pool.vm_size}) for Machine {view.name} ended "
                                 f"{pool.provisioning_state}{detail}; deleted it so the next attempt starts afresh",
                                 after=30.0)
        node = await self._wait_node(name) if wait else await self._node_of_pool(name)
        if node is None and self._kube is not None and not wait:
            return dataclasses.replace(self._ref(pool, None), message=(
                f"agent pool {name} ({pool.vm_size}) is ready; waiting for its node to register"))
        if node is None and self._kube is not None:
            raise RetryableError(f"agent pool {name} is ready but its node has not registered with the cluster "
                                 f"after {self.settings.aks_node_wait_seconds:.0f}s", after=10.0)
        return self._ref(pool, node)

    async def get(self, machine: Any) -> NodeRef | None:
        name = pool_name(view_machine(machine).name)
        pool = await self._get_pool(name)
        if pool is None:
            return None
        return self._ref(pool, await self._node_of_pool(name))

    async def delete(self, machine: Any) -> None:
        await self._delete_pool(pool_name(view_machine(machine).name))

    def _made_by_us(self, pool: AgentPool) -> bool:
        """Our labels, a name we derive from the Machine it names, and ARM tags that agree with its
        labels on the install: node labels alone are no proof (anyone can set them on a pool)."""
        labels = pool.node_labels or {}
        machine = labels.get(LABEL_MACHINE)
        if labels.get(LABEL_PROVISIONER) != self.name or not machine or pool_name(machine) != pool.name:
            return False
        return (pool.tags or {}).get(INSTALL_TAG) == labels.get(LABEL_INSTALL)

    async def list(self) -> list[NodeRef]:
        s = self.settings
        pools: list[AgentPool] = []
        try:
            async for pool in self.aks.agent_pools.list(s.arm_resource_group, s.azure_cluster_name):
                if self._made_by_us(pool):
                    pools.append(pool)
        except AzureError as exc:
            raise map_arm_error(exc, action=f"listing agent pools of {s.azure_cluster_name}") from exc
        nodes: dict[str, dict[str, Any]] = {}
        for node in await self._nodes(f"{LABEL_PROVISIONER}={self.name}"):
            pool_of = ((node.get("metadata") or {}).get("labels") or {}).get(AGENTPOOL_LABEL)
            if pool_of:
                nodes[pool_of] = node
        return [self._ref(pool, nodes.get(str(pool.name))) for pool in pools]

    async def instance_types(self) -> builtins.list[InstanceTypeInfo]:
        return await self.catalog.instance_types()
