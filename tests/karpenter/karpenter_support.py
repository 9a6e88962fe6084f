"""Plays Karpenter's part for the karpenter provisioner tests (no tests here).

:class:`FakeKarpenter` does what Karpenter's NodeClaim lifecycle controller does, on
the real API server: adds the termination finalizer, "launches" (sets
``status.providerID`` and Launched), creates a kwok Node carrying the NodeClaim's
labels, single-valued requirements, taints and startup taints (Registered, with
``status.nodeName``), marks Initialized once kwok has the Node Ready, and on
deletion deletes the Node before dropping its finalizer. It can fail a launch for
chosen instance types, as Karpenter does on insufficient capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from pathlib import Path
from typing import Any

import yaml
from kaito_presets import default_catalog
from kaito_provisioner_karpenter import NODECLAIM

from kaito_core.engine import CRD, NODE, AlreadyExistsError, Client, NotFoundError
from kaito_core.testing import gpu_node_manifest

__all__ = ["CRD_FILE", "TERMINATION_FINALIZER", "FakeKarpenter", "install_nodeclaim_crd"]

CRD_FILE = Path(__file__).with_name("karpenter.sh_nodeclaims.yaml")
TERMINATION_FINALIZER = "karpenter.sh/termination"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def install_nodeclaim_crd(client: Client) -> None:
    await client.apply(yaml.safe_load(CRD_FILE.read_text()), kind=CRD, force=True)
    for _ in range(150):
        try:
            await client.list_page(NODECLAIM, limit=1)
            return
        except NotFoundError:
            await asyncio.sleep(0.2)
    raise AssertionError("NodeClaim CRD not served")


def _conditions(nodeclaim: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (nodeclaim.get("status") or {}).get("conditions") or []}


class FakeKarpenter:
    def __init__(self, client: Client, *, fail_launch: dict[str, tuple[str, str]] | None = None,
                 register_delay: float = 0.0, interval: float = 0.2):
        self.client = client
        self.fail_launch = fail_launch or {}
        self.register_delay = register_delay
        self.interval = interval
        #: every NodeClaim as first seen, by name (tests check the spec the plugin wrote)
        self.seen: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []
        self.launch_failures = 0
        self._launched_at: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            for nodeclaim in (await self.client.list(NODECLAIM)).items:
                with contextlib.suppress(NotFoundError, AlreadyExistsError):
                    await self.step(nodeclaim)
            await asyncio.sleep(self.interval)

    async def _status(self, nodeclaim: dict[str, Any], status: dict[str, Any],
                      **conditions: tuple[str, str, str]) -> None:
        merged = dict(_conditions(nodeclaim))
        for type_, (state, reason, message) in conditions.items():
            merged[type_] = {"type": type_, "status": state, "reason": reason, "message": message,
                             "lastTransitionTime": _now()}
        status = {**(nodeclaim.get("status") or {}), **status, "conditions": list(merged.values())}
        await self.client.patch_status(NODECLAIM, nodeclaim["metadata"]["name"], {"status": status})

    async def step(self, nodeclaim: dict[str, Any]) -> None:
        meta = nodeclaim["metadata"]
        name = meta["name"]
        status = nodeclaim.get("status") or {}
        if meta.get("deletionTimestamp"):
            if status.get("nodeName"):
                await self.client.delete(NODE, status["nodeName"], missing_ok=True)
            finalizers = [f for f in meta.get("finalizers") or [] if f != TERMINATION_FINALIZER]
            await self.client.patch(NODECLAIM, name, {"metadata": {"finalizers": finalizers}})
            return
        if TERMINATION_FINALIZER not in (meta.get("finalizers") or []):
            self.seen.setdefault(name, nodeclaim)
            self.created.append(name)
            await self.client.patch(NODECLAIM, name, {"metadata": {
                "finalizers": [*(meta.get("finalizers") or []), TERMINATION_FINALIZER]}})
            return
        conditions = _conditions(nodeclaim)
        requirements = {r["key"]: r.get("values") or [] for r in nodeclaim["spec"]["requirements"]}
        instance_type = (requirements.get(INSTANCE_TYPE) or ["unknown"])[0]
        node_name = f"karpenter-{name}"
        if "Launched" not in conditions:
            if instance_type in self.fail_launch:
                reason, message = self.fail_launch[instance_type]
                self.launch_failures += 1
                await self._status(nodeclaim, {}, Launched=("False", reason, message))
                return
            sku = default_catalog().find_sku(instance_type)
            gpus = str(sku.gpu_count if sku else 1)
            self._launched_at[name] = asyncio.get_running_loop().time()
            resources = {"nvidia.com/gpu": gpus}
            await self._status(nodeclaim, {"providerID": f"kwok://{node_name}",
                                           "capacity": resources, "allocatable": resources},
                               Launched=("True", "Launched", ""), Registered=("Unknown", "AwaitingRegistration",
                                                                              "Node not registered with cluster"))
            return
        if conditions["Launched"]["status"] != "True":
            return
        if conditions.get("Registered", {}).get("status") != "True":
            if asyncio.get_running_loop().time() - self._launched_at.get(name, 0) < self.register_delay:
                return
            sku = default_catalog().find_sku(instance_type)
            labels = {**(meta.get("labels") or {}),
                      **{k: v[0] for k, v in requirements.items() if len(v) == 1}, "karpenter.sh/registered": "true"}
            taints = [*nodeclaim["spec"].get("taints", []), *nodeclaim["spec"].get("startupTaints", [])]
            node = gpu_node_manifest(node_name, instance_type=instance_type, gpus=sku.gpu_count if sku else 1,
                                     labels=labels, taints=taints, provider_id=status["providerID"])
            with contextlib.suppress(AlreadyExistsError):
                await self.client.create(node, kind=NODE)
            await self._status(nodeclaim, {"nodeName": node_name}, Registered=("True", "Registered", ""),
                               Initialized=("Unknown", "NotInitialized", "Node not ready"))
            return
        if conditions.get("Initialized", {}).get("status") != "True":
            node = await self.client.get_or_none(NODE, node_name)
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in ((node or {}).get("status") or {}).get("conditions") or [])
            if ready:
                await self._status(nodeclaim, {}, Initialized=("True", "Initialized", ""), Ready=("True", "Ready", ""))
