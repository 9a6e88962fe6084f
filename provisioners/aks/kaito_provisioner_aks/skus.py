"""Before creating a pool: does the VM size exist here, is it open to us, and is there quota?

Asks Microsoft.Compute once per ``AKS_SKU_CACHE_SECONDS`` (``resource_skus.list``
filtered by location, ``usage.list`` for the region) and answers from memory in
between, so a Machine for a size the subscription cannot have fails in
milliseconds with the numbers a person needs, not after a ten-minute create.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from azure.core.exceptions import AzureError
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.compute.models import ResourceSku

from kaito_core.provisioning import InstanceTypeInfo, InstanceTypeUnavailableError, QuotaExceededError
from kaito_provisioner_aks.errors import map_arm_error

__all__ = ["QuotaUsage", "SkuCatalog", "SkuInfo"]

REGIONAL_QUOTA = "cores"  # "Total Regional vCPUs"


@dataclass(frozen=True)
class SkuInfo:
    """What the provisioner needs to know of a VM size in our region."""

    name: str
    family: str
    vcpus: int
    gpus: int
    memory_gb: float
    zones: tuple[str, ...] = ()
    restricted_reason: str | None = None
    """Why the subscription may not use it here (e.g. NotAvailableForSubscription), None when it may."""
    restricted_zones: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuotaUsage:
    name: str
    current: int
    limit: int

    @property
    def left(self) -> int:
        return max(0, self.limit - self.current)


def _capability(sku: ResourceSku, name: str) -> str | None:
    for cap in sku.capabilities or []:
        if cap.name == name:
            return cap.value
    return None


def _number(value: str | None) -> float:
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0


def _text(value: object) -> str:
    """An enum member's value, or the string (``str()`` of a str-enum gives its qualified name in 3.11)."""
    if isinstance(value, Enum):
        return str(value.value)
    return "" if value is None else str(value)


def sku_info(sku: ResourceSku, location: str) -> SkuInfo:
    loc = location.lower()
    zones: tuple[str, ...] = ()
    for info in sku.location_info or []:
        if (info.location or "").lower() == loc:
            zones = tuple(sorted(info.zones or []))
    restricted: str | None = None
    restricted_zones: list[str] = []
    for restriction in sku.restrictions or []:
        rtype = _text(restriction.type)
        values = [v.lower() for v in restriction.values_property or []]
        reason = _text(restriction.reason_code) or "restricted"
        if rtype.lower() == "location" and (not values or loc in values):
            restricted = reason
        elif rtype.lower() == "zone" and restriction.restriction_info is not None:
            restricted_zones.extend(restriction.restriction_info.zones or [])
    return SkuInfo(
        name=str(sku.name), family=str(sku.family or ""), vcpus=int(_number(_capability(sku, "vCPUs"))),
        gpus=int(_number(_capability(sku, "GPUs"))), memory_gb=_number(_capability(sku, "MemoryGB")),
        zones=zones, restricted_reason=restricted, restricted_zones=tuple(sorted(set(restricted_zones))))


@dataclass
class _Cached:
    at: float = -1e18
    skus: dict[str, SkuInfo] = field(default_factory=dict)
    usages: dict[str, QuotaUsage] = field(default_factory=dict)


class SkuCatalog:
    """SKU and quota answers for one subscription and region, cached for ``ttl`` seconds."""

    def __init__(self, compute: ComputeManagementClient, location: str, *, ttl: float = 300.0):
        self._compute = compute
        self.location = location
        self.ttl = ttl
        self._skus = _Cached()
        self._usages = _Cached()
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._skus.at = self._usages.at = -1e18

    def _fresh(self, cached: _Cached) -> bool:
        return time.monotonic() - cached.at < self.ttl

    async def skus(self) -> dict[str, SkuInfo]:
        async with self._lock:
            if not self._fresh(self._skus):
                found: dict[str, SkuInfo] = {}
                try:
                    async for sku in self._compute.resource_skus.list(filter=f"location eq '{self.location}'"):
                        if (sku.resource_type or "").lower() == "virtualmachines" and sku.name:
                            found[sku.name.lower()] = sku_info(sku, self.location)
                except AzureError as exc:
                    raise map_arm_error(exc, action=f"listing VM sizes in {self.location}") from exc
                self._skus = _Cached(at=time.monotonic(), skus=found)
            return self._skus.skus

    async def usages(self) -> dict[str, QuotaUsage]:
        async with self._lock:
            if not self._fresh(self._usages):
                found: dict[str, QuotaUsage] = {}
                try:
                    async for usage in self._compute.usage.list(self.location):
                        name = str(usage.name.value or "")
                        found[name.lower()] = QuotaUsage(name, int(usage.current_value), int(usage.limit))
                except AzureError as exc:
                    raise map_arm_error(exc, action=f"reading vCPU quota in {self.location}") from exc
                self._usages = _Cached(at=time.monotonic(), usages=found)
            return self._usages.usages

    async def lookup(self, vm_size: str) -> SkuInfo:
        """The size's facts, or InstanceTypeUnavailableError when the region does not offer it."""
        info = (await self.skus()).get(vm_size.lower())
        if info is None:
            raise InstanceTypeUnavailableError(
                f"{vm_size} is not offered in {self.location}: pick a size listed by "
                f"`az vm list-skus -l {self.location} --resource-type virtualMachines`")
        return info

    async def check(self, vm_size: str, *, count: int = 1, zones: Iterable[str] = ()) -> SkuInfo:
        """Raise the typed error a create would end in, before creating anything."""
        info = await self.lookup(vm_size)
        if info.restricted_reason:
            raise InstanceTypeUnavailableError(
                f"{vm_size} is restricted for this subscription in {self.location} ({info.restricted_reason}): "
                "ask Azure support to enable it, or pick another size or region")
        wanted = [z for z in zones if z]
        if wanted:
            usable = [z for z in wanted if z in info.zones and z not in info.restricted_zones]
            if not usable:
                raise InstanceTypeUnavailableError(
                    f"{vm_size} is not available in zone(s) {', '.join(wanted)} of {self.location} "
                    f"(offered in: {', '.join(z for z in info.zones if z not in info.restricted_zones) or 'none'})")
        needed = info.vcpus * count
        usages = await self.usages()
        for key, label in ((info.family.lower(), f"family {info.family}"), (REGIONAL_QUOTA, "total regional")):
            usage = usages.get(key)
            if usage is None:
                continue
            if usage.left < needed:
                raise QuotaExceededError(
                    f"{vm_size} needs {needed} vCPUs of {label}; quota {usage.left} of {usage.limit} left in "
                    f"{self.location}: request an increase for {usage.name} (Azure portal > Quotas)")
        return info

    def reserve(self, vm_size_info: SkuInfo, count: int = 1) -> None:
        """Count a pool we just created against the cached quota until the next refresh."""
        needed = vm_size_info.vcpus * count
        for key in (vm_size_info.family.lower(), REGIONAL_QUOTA):
            usage = self._usages.usages.get(key)
            if usage is not None:
                self._usages.usages[key] = QuotaUsage(usage.name, usage.current + needed, usage.limit)

    async def instance_types(self) -> list[InstanceTypeInfo]:
        """GPU sizes of the region as kaito-core's InstanceTypeInfo (GPU memory is not in the SKU API: 0)."""
        out = []
        for info in (await self.skus()).values():
            if info.gpus <= 0:
                continue
            out.append(InstanceTypeInfo(name=info.name, gpu_count=info.gpus, gpu_memory_gib=0.0,
                                        available=info.restricted_reason is None,
                                        reason=info.restricted_reason or ""))
        return sorted(out, key=lambda i: i.name)
