"""A fake Azure Resource Manager on 127.0.0.1 that the real Azure SDK clients talk to over HTTPS.

It speaks just enough ARM for the AKS provisioner:

* ``Microsoft.ContainerService``: the managed cluster (GET), its agent pools
  (PUT answered 201 + ``Azure-AsyncOperation``, GET, DELETE answered 202, LIST) and
  the async operation status documents the SDK polls (with ``Retry-After``);
* ``Microsoft.Compute``: resource SKUs (filtered by location) and vCPU usages;
* an Entra ID token endpoint (``/{tenant}/oauth2/v2.0/token``) for the workload-identity
  credential, so the full credential flow runs too.

When a pool's create finishes, it creates the pool's Node in the test apiserver
the way AKS would (``aks-<pool>-<n>-vmss000000``, the ``kubernetes.azure.com/agentpool``
label, an ``azure:///subscriptions/.../virtualMachineScaleSets/...`` providerID, the
SKU's GPUs as ``nvidia.com/gpu`` capacity, the kwok annotation so kwok marks it
Ready); deleting the pool deletes the Node.

Faults: :meth:`FakeARM.inject` answers the next N matching requests with a status
(429 + ``Retry-After``, 500...) or drops the connection; ``op_seconds`` makes
operations slow; ``fail_next_operation`` ends the next create with an ARM error
(AllocationFailed...); ``quotas`` and restricted SKUs make the pre-checks fail.
Every request is counted by ``"METHOD route"`` in :attr:`FakeARM.calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import re
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from kubernetes_asyncio import client as k8s

from kaito_core.testing import gpu_node_manifest
from kaito_core.testing.certs import make_ca, sign_certificate

__all__ = ["DEFAULT_SKUS", "FakeARM", "FakeSku", "Fault", "write_certs"]

VMSS_ID = "12345678"


@dataclass
class FakeSku:
    name: str
    family: str
    vcpus: int
    gpus: int
    memory_gb: int
    zones: tuple[str, ...] = ("1", "2", "3")
    restricted: str | None = None
    """A Location restriction's reason code (e.g. NotAvailableForSubscription), None when open."""

    def document(self, location: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "resourceType": "virtualMachines",
            "name": self.name,
            "tier": "Standard",
            "size": self.name.removeprefix("Standard_"),
            "family": self.family,
            "locations": [location],
            "locationInfo": [{"location": location, "zones": list(self.zones), "zoneDetails": []}],
            "capabilities": [
                {"name": "vCPUs", "value": str(self.vcpus)},
                {"name": "GPUs", "value": str(self.gpus)},
                {"name": "MemoryGB", "value": str(self.memory_gb)},
            ],
            "restrictions": [],
        }
        if self.restricted:
            doc["restrictions"].append({
                "type": "Location", "values": [location],
                "restrictionInfo": {"locations": [location], "zones": list(self.zones)},
                "reasonCode": self.restricted,
            })
        return doc


DEFAULT_SKUS = [
    FakeSku("Standard_D4s_v3", "standardDSv3Family", 4, 0, 16),
    FakeSku("Standard_NC6s_v3", "standardNCSv3Family", 6, 1, 112),
    FakeSku("Standard_NC12s_v3", "standardNCSv3Family", 12, 2, 224),
    FakeSku("Standard_NC24ads_A100_v4", "standardNCADSA100v4Family", 24, 1, 220),
    FakeSku("Standard_NC96ads_A100_v4", "standardNCADSA100v4Family", 96, 4, 880),
    FakeSku("Standard_ND96asr_v4", "standardNDASv4_A100Family", 96, 8, 900, restricted="NotAvailableForSubscription"),
    FakeSku("Standard_NV36ads_A10_v5", "standardNVADSA10v5Family", 36, 1, 440),
]
DEFAULT_QUOTAS = {  # family -> (current, limit)
    "cores": (8, 350),
    "standardDSv3Family": (8, 100),
    "standardNCSv3Family": (0, 48),
    "standardNCADSA100v4Family": (0, 0),
    "standardNDASv4_A100Family": (0, 0),
    "standardNVADSA10v5Family": (0, 72),
}


@dataclass
class Fault:
    """Answer the next ``count`` requests matching ``method``/``route`` with ``status`` (or drop them)."""

    count: int
    status: int = 429
    method: str | None = None
    route: str | None = None
    retry_after: str | None = None
    code: str = "TooManyRequests"
    message: str = "injected fault"
    drop: bool = False
    delay: float = 0.0
    after: bool = False
    """With ``drop``: let the server do the work, then drop the connection before the answer (a lost response)."""

    def matches(self, method: str, route: str) -> bool:
        return (self.method is None or self.method == method) and (self.route is None or self.route == route)


@dataclass
class Operation:
    id: str
    status: str = "InProgress"
    error: dict[str, Any] | None = None
    started: str = field(default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat())

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "name": self.id, "status": self.status, "startTime": self.started}
        if self.error:
            doc["error"] = self.error
        return doc


def write_certs(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for 127.0.0.1/localhost: (ca.crt, tls.crt, tls.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca("fake-arm-ca")
    cert, key = sign_certificate(ca_cert, ca_key, "fake-arm", dns_names=("localhost",),
                                 ip_addresses=("127.0.0.1",), server=True)
    ca_path, cert_path, key_path = folder / "ca.crt", folder / "tls.crt", folder / "tls.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def arm_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def _parse_taint(text: str) -> dict[str, str]:
    kv, _, effect = text.partition(":")
    key, _, value = kv.partition("=")
    taint = {"key": key, "effect": effect or "NoSchedule"}
    if value:
        taint["value"] = value
    return taint


class FakeARM:
    """The fake; ``await start()`` returns its base URL, ``await stop()`` ends it."""

    def __init__(self, *, certs: tuple[Path, Path, Path], kube_api: k8s.ApiClient | None = None,
                 subscription: str = "00000000-0000-0000-0000-0000000000aa", resource_group: str = "rg-kaito",
                 cluster: str = "kaito-aks", location: str = "westus2", op_seconds: float = 1.0,
                 poll_retry_after: str = "1", skus: list[FakeSku] | None = None,
                 quotas: dict[str, tuple[int, int]] | None = None):
        self.ca_path, self._cert, self._key = certs
        self.kube_api = kube_api
        self.engine_client: Any = None
        """kaito-core's engine client on the same cluster, for the provisioners under test (set by a fixture)."""
        self.subscription = subscription
        self.resource_group = resource_group
        self.cluster = cluster
        self.location = location
        self.op_seconds = op_seconds
        self.poll_retry_after = poll_retry_after
        self.skus = {s.name.lower(): s for s in copy.deepcopy(skus or DEFAULT_SKUS)}
        self.quotas = dict(quotas or DEFAULT_QUOTAS)
        self.pools: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, Operation] = {}
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[float, str, int]] = []
        self.faults: list[Fault] = []
        self.operation_failures: list[dict[str, str]] = []
        self.nodes: dict[str, str] = {}  # pool -> node name
        self.tokens_issued = 0
        self.authorizations: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._called = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.node_resource_group = f"MC_{resource_group}_{cluster}_{location}"

    # -- lifecycle

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._cert, self._key)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"https://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test knobs

    def inject(self, count: int, status: int = 429, *, method: str | None = None, route: str | None = None,
               retry_after: str | None = None, code: str | None = None, message: str = "injected fault",
               drop: bool = False, delay: float = 0.0, after: bool = False) -> Fault:
        """Fault the next ``count`` matching requests (``route`` as in :attr:`calls`, e.g. "agentPool")."""
        fault = Fault(count, status, method, route, retry_after,
                      code or ("TooManyRequests" if status == 429 else "InternalServerError"), message, drop, delay,
                      after)
        self.faults.append(fault)
        return fault

    def fail_next_operation(self, code: str = "AllocationFailed",
                            message: str = "Allocation failed. We do not have sufficient capacity for the "
                                           "requested VM size in this region.") -> None:
        self.operation_failures.append({"code": code, "message": message})

    def add_pool(self, name: str, *, vm_size: str = "Standard_NC6s_v3", node_labels: dict[str, str] | None = None,
                 state: str = "Succeeded", mode: str = "User", tags: dict[str, str] | None = None) -> dict[str, Any]:
        """Put a pool in place as if someone made it earlier (no Node)."""
        properties: dict[str, Any] = {"count": 1, "vmSize": vm_size, "mode": mode,
                                      "nodeLabels": node_labels or {}, "osType": "Linux"}
        if tags is not None:
            properties["tags"] = tags
        pool = self._pool_document(name, properties, state)
        self.pools[name] = pool
        return pool

    def count(self, prefix: str = "") -> int:
        """Calls whose key starts with ``prefix`` ("PUT agentPool", "GET", ...); all of them by default."""
        return sum(n for key, n in self.calls.items() if key.startswith(prefix))

    async def wait_for_call(self, key: str, times: int = 1, timeout: float = 10.0) -> None:
        """Until ``calls[key]`` reaches ``times``."""
        async with asyncio.timeout(timeout), self._called:
            await self._called.wait_for(lambda: self.calls[key] >= times)

    def snapshot(self) -> Counter[str]:
        return Counter(self.calls)

    # -- plumbing

    def _route(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        sub, rg, cl, loc = (re.escape(x) for x in (self.subscription, self.resource_group, self.cluster,
                                                     self.location))
        cluster = (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService"
                   f"/managedClusters/{cl}")
        patterns = [
            ("managedCluster", f"^{cluster}$"),
            ("agentPools", f"^{cluster}/agentPools$"),
            ("agentPool", f"^{cluster}/agentPools/(?P<pool>[^/]+)$"),
            ("operation", f"^/subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{loc}"
                          f"/operations/(?P<op>[^/]+)$"),
            ("skus", f"^/subscriptions/{sub}/providers/Microsoft.Compute/skus$"),
            ("usages", f"^/subscriptions/{sub}/providers/Microsoft.Compute/locations/(?P<loc>[^/]+)/usages$"),
            ("token", r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$"),
        ]
        for route, pattern in patterns:
            match = re.match(pattern, path, flags=re.IGNORECASE)
            if match:
                return route, match.groupdict()
        return "unknown", {}

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        route, _ = self._route(request.method, request.path)
        key = f"{request.method} {route}"
        self.calls[key] += 1
        async with self._called:
            self._called.notify_all()
        for fault in self.faults:
            if fault.count > 0 and fault.matches(request.method, route):
                fault.count -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.drop and fault.after:
                    await handler(request)
                if fault.drop:
                    assert request.transport is not None
                    request.transport.abort()
                    self.log.append((time.monotonic(), key, 0))
                    return web.Response(status=500)
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                self.log.append((time.monotonic(), key, fault.status))
                return arm_error(fault.status, fault.code, fault.message, headers)
        if route != "token":
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
                return arm_error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is "
                              "missing.")
            self.authorizations[auth.removeprefix("Bearer ")] += 1
        response: web.StreamResponse = await handler(request)
        self.log.append((time.monotonic(), key, response.status))
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route, params = self._route(request.method, request.path)
        method = request.method
        if route == "managedCluster" and method == "GET":
            return web.json_response(self._cluster_document())
        if route == "agentPools" and method == "GET":
            return web.json_response({"value": [copy.deepcopy(p) for p in self.pools.values()]})
        if route == "agentPool":
            name = params["pool"]
            if method == "GET":
                if name not in self.pools:
                    return arm_error(404, "NotFound", f"Agent pool {name} not found.")
                return web.json_response(self.pools[name])
            if method == "PUT":
                return await self._put_pool(request, name)
            if method == "DELETE":
                return self._delete_pool(name)
        if route == "operation" and method == "GET":
            op = self.operations.get(params["op"])
            if op is None:
                return arm_error(404, "NotFound", "operation not found")
            headers = {"Retry-After": self.poll_retry_after} if op.status == "InProgress" else None
            return web.json_response(op.document(), headers=headers)
        if route == "skus" and method == "GET":
            wanted = re.search(r"location eq '([^']+)'", request.query.get("$filter", ""))
            if wanted and wanted.group(1).lower() != self.location.lower():
                return web.json_response({"value": []})
            return web.json_response({"value": [s.document(self.location) for s in self.skus.values()]})
        if route == "usages" and method == "GET":
            return web.json_response({"value": [
                {"unit": "Count", "currentValue": cur, "limit": lim,
                 "name": {"value": fam, "localizedValue": f"{fam} vCPUs"}}
                for fam, (cur, lim) in self.quotas.items()]})
        if route == "token" and method == "POST":
            form = await request.post()
            if not form.get("client_assertion") or not form.get("client_id"):
                return web.json_response({"error": "invalid_request", "error_description": "no assertion"},
                                         status=400)
            self.tokens_issued += 1
            return web.json_response({"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600,
                                      "access_token": f"fake-token-{self.tokens_issued}"})
        return arm_error(404, "InvalidResourceType", f"the fake ARM does not serve {method} {request.path}")

    def _cluster_document(self) -> dict[str, Any]:
        return {
            "id": (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
                   f"Microsoft.ContainerService/managedClusters/{self.cluster}"),
            "name": self.cluster, "location": self.location, "type": "Microsoft.ContainerService/ManagedClusters",
            "properties": {"provisioningState": "Succeeded", "kubernetesVersion": "1.37.2",
                           "nodeResourceGroup": self.node_resource_group, "dnsPrefix": self.cluster},
        }

    def _pool_document(self, name: str, properties: dict[str, Any], state: str) -> dict[str, Any]:
        props = dict(properties)
        props["provisioningState"] = state
        props["powerState"] = {"code": "Running"}
        props.setdefault("type", "VirtualMachineScaleSets")
        return {
            "id": (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
                   f"Microsoft.ContainerService/managedClusters/{self.cluster}/agentPools/{name}"),
            "name": name, "type": "Microsoft.ContainerService/managedClusters/agentPools",
            "properties": props,
        }

    def _operation_url(self, op_id: str) -> str:
        return (f"{self.base_url}/subscriptions/{self.subscription}/providers/Microsoft.ContainerService/"
                f"locations/{self.location}/operations/{op_id}?api-version=2016-03-30")

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put_pool(self, request: web.Request, name: str) -> web.StreamResponse:
        body = await request.json()
        props: dict[str, Any] = body.get("properties") or {}
        existing = self.pools.get(name)
        if existing is not None:
            state = existing["properties"]["provisioningState"]
            if state not in ("Succeeded", "Failed", "Canceled"):
                return arm_error(409, "OperationNotAllowed",
                              f"Operation is not allowed because there's an in progress {state.lower()} agent "
                              f"pool operation on {name}. Please wait for it to finish before sending a new "
                              "request.")
            if state == "Succeeded":
                return web.json_response(existing, status=200)
        vm_size = str(props.get("vmSize", ""))
        sku = self.skus.get(vm_size.lower())
        if sku is None or sku.restricted:
            return arm_error(400, "SkuNotAvailable",
                          f"The requested VM size {vm_size} is currently not available in location "
                          f"'{self.location}' for this subscription.")
        need = sku.vcpus * int(props.get("count", 1))
        for fam in (sku.family, "cores"):
            cur, lim = self.quotas.get(fam, (0, 10**6))
            if cur + need > lim:
                return arm_error(400, "QuotaExceeded",
                              f"Operation could not be completed as it results in exceeding approved {fam} Cores "
                              f"quota. Location: {self.location}, Current Limit: {lim}, Current Usage: {cur}, "
                              f"Additional Required: {need}.")
        for fam in (sku.family, "cores"):
            cur, lim = self.quotas.get(fam, (0, 10**6))
            self.quotas[fam] = (cur + need, lim)
        pool = self._pool_document(name, props, "Creating")
        self.pools[name] = pool
        op = Operation(uuid.uuid4().hex)
        self.operations[op.id] = op
        failure = self.operation_failures.pop(0) if self.operation_failures else None
        self._spawn(self._finish_create(name, op, sku, failure))
        headers = {"Azure-AsyncOperation": self._operation_url(op.id), "Retry-After": self.poll_retry_after}
        return web.json_response(pool, status=201, headers=headers)

    async def _finish_create(self, name: str, op: Operation, sku: FakeSku, failure: dict[str, str] | None) -> None:
        await asyncio.sleep(self.op_seconds)
        pool = self.pools.get(name)
        if pool is None or pool["properties"]["provisioningState"] != "Creating":
            op.status, op.error = "Canceled", {"code": "Canceled", "message": "the pool was deleted"}
            return
        if failure is not None:
            pool["properties"]["provisioningState"] = "Failed"
            pool["properties"]["status"] = {"provisioningError": dict(failure)}
            for fam in (sku.family, "cores"):
                cur, lim = self.quotas[fam]
                self.quotas[fam] = (max(0, cur - sku.vcpus), lim)
            op.status, op.error = "Failed", dict(failure)
            return
        try:
            await self._create_node(name, pool, sku)
        except Exception as exc:
            pool["properties"]["provisioningState"] = "Failed"
            op.status, op.error = "Failed", {"code": "InternalError", "message": f"node creation failed: {exc}"}
            raise
        pool["properties"]["provisioningState"] = "Succeeded"
        op.status = "Succeeded"

    def node_name(self, pool: str) -> str:
        return f"aks-{pool}-{VMSS_ID}-vmss000000"

    def provider_id(self, pool: str) -> str:
        return (f"azure:///subscriptions/{self.subscription}/resourceGroups/{self.node_resource_group.lower()}"
                f"/providers/Microsoft.Compute/virtualMachineScaleSets/aks-{pool}-{VMSS_ID}-vmss"
                f"/virtualMachines/0")

    async def _create_node(self, name: str, pool: dict[str, Any], sku: FakeSku) -> None:
        if self.kube_api is None:
            return
        props = pool["properties"]
        node = self.node_name(name)
        zones = props.get("availabilityZones") or []
        labels = {
            "kubernetes.azure.com/agentpool": name,
            "agentpool": name,
            "kubernetes.azure.com/cluster": self.node_resource_group,
            "kubernetes.azure.com/mode": str(props.get("mode", "User")).lower(),
            "kubernetes.azure.com/os-sku": str(props.get("osSKU", "Ubuntu")),
            "kubernetes.azure.com/accelerator": "nvidia",
            "kubernetes.azure.com/node-image-version": "AKSUbuntu-2204gen2containerd-202611.01.0",
            "topology.kubernetes.io/region": self.location,
            "topology.kubernetes.io/zone": f"{self.location}-{zones[0]}" if zones else "0",
            **(props.get("nodeLabels") or {}),
        }
        taints = [_parse_taint(t) for t in props.get("nodeTaints") or []]
        manifest: Any = gpu_node_manifest(node, instance_type=sku.name, gpus=sku.gpus, labels=labels, taints=taints,
                                          provider_id=self.provider_id(name), cpu=str(sku.vcpus),
                                          memory=f"{sku.memory_gb}Gi")
        core = k8s.CoreV1Api(self.kube_api)
        try:
            await core.create_node(manifest, _request_timeout=10)
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise
        self.nodes[name] = node

    def _delete_pool(self, name: str) -> web.StreamResponse:
        pool = self.pools.get(name)
        if pool is None:
            return web.Response(status=204)
        pool["properties"]["provisioningState"] = "Deleting"
        op = Operation(uuid.uuid4().hex)
        self.operations[op.id] = op
        self._spawn(self._finish_delete(name, op))
        headers = {"Azure-AsyncOperation": self._operation_url(op.id), "Retry-After": self.poll_retry_after}
        return web.Response(status=202, headers=headers)

    async def _finish_delete(self, name: str, op: Operation) -> None:
        await asyncio.sleep(self.op_seconds / 2)
        pool = self.pools.pop(name, None)
        node = self.nodes.pop(name, None)
        if node is not None and self.kube_api is not None:
            with contextlib.suppress(k8s.ApiException):
                await k8s.CoreV1Api(self.kube_api).delete_node(node, _request_timeout=10)
        if pool is not None:
            sku = self.skus.get(str(pool["properties"].get("vmSize", "")).lower())
            if sku is not None and pool["properties"].get("status") is None:
                for fam in (sku.family, "cores"):
                    if fam in self.quotas:
                        cur, lim = self.quotas[fam]
                        self.quotas[fam] = (max(0, cur - sku.vcpus), lim)
        op.status = "Succeeded"

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no operation is running (tests that end mid-operation call it before checking)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
