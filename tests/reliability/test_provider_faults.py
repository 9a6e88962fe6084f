"""Provider faults: a cloud that fails 30% of its calls still converges; quota errors reach the Workspace
within one reconcile.

* simulated provisioner, ``retryable_error_rate=0.3`` (operator process): Workspaces come up and go.
* the AKS plugin against the fake ARM (tests/aks/fake_arm.py) where 30% of requests answer 429
  (Retry-After 1), 500, or hang past the client's timeout / drop the connection: Workspaces come up
  on exactly one agent pool each and go, leaving no pool behind.
* quota: a Workspace on an instance type whose quota is exhausted (simulated ``quota_exceeded``; in the
  fake ARM a family with limit 0) shows ResourceReady=False/QuotaExceeded with the provider's words,
  at most one Workspace reconcile after the Machine recorded the error.

Sizes: KAITO_RELIABILITY_PROVIDER_WORKSPACES (30), KAITO_RELIABILITY_AKS_WORKSPACES (8).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aks_support import FakeCredential, settings_for
from fake_arm import DEFAULT_QUOTAS, FakeARM, arm_error, write_certs
from kaito_provisioner_aks import AKSProvisioner
from reliability_support import (
    Fleet,
    OperatorProcess,
    ReliabilityRow,
    audited_creates,
    condition,
    env_int,
    eventually,
    objects_left,
    operator_kubeconfig,
    record,
    repeated,
    workspace_doc,
)

from kaito_core.api import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from kaito_core.controllers.workspace import MACHINE, WORKSPACE
from kaito_core.engine import ManagerSettings
from kaito_core.manager import Operator, OperatorSettings
from kaito_core.manager.settings import WebhookSettings
from kaito_core.provisioning.simulated import SimulatedProvisioner, SimulatedSettings
from kaito_core.testing import ControlPlane
from kaito_core.testing.pytest_plugin import api_client_for

pytestmark = pytest.mark.reliability

WORKSPACES = env_int("PROVIDER_WORKSPACES", 30)
AKS_WORKSPACES = env_int("AKS_WORKSPACES", 8)
QUOTA_TYPE = "Standard_NC24ads_A100_v4"


class QuotaProbe:
    """Wraps the Workspace reconciler of an in-process operator: for each reconcile, whether the
    Machine in the operator's cache already carried QuotaExceeded when it started, and what the
    Workspace's ResourceReady said once it finished."""

    def __init__(self, operator: Operator):
        self.controller = operator.workspace_controller
        self.inner = self.controller.reconciler
        self.client = operator.manager.client
        self.log: list[tuple[str, bool, str | None]] = []
        self.controller.reconciler = self  # type: ignore[assignment]

    def _machine_has_quota_error(self, namespace: str | None, name: str) -> bool:
        cache = self.inner.cache  # type: ignore[attr-defined]
        for machine in cache.list(MACHINE, label_selector={LABEL_WORKSPACE: name,
                                                            LABEL_WORKSPACE_NAMESPACE: str(namespace)}):
            if any(c.get("reason") == "QuotaExceeded" for c in (machine.get("status") or {}).get("conditions") or []):
                return True
        return False

    async def reconcile(self, request: Any) -> Any:
        before = self._machine_has_quota_error(request.namespace, request.name)
        try:
            return await self.inner.reconcile(request)
        finally:
            ws = await self.client.get_or_none(WORKSPACE, request.name, request.namespace)
            cond = condition(ws, "ResourceReady") if ws else None
            self.log.append((request.name, before, (cond or {}).get("reason")))

    def reconciles_until_surfaced(self, name: str) -> int | None:
        """Reconciles of ``name`` that started with the Machine's error in cache, up to and including the
        first that left QuotaExceeded on the Workspace (1 = the very first one did)."""
        n = 0
        for who, machine_had_it, reason in self.log:
            if who != name or not machine_had_it:
                continue
            n += 1
            if reason == "QuotaExceeded":
                return n
        return None


async def _quota_surfaces(fleet: Fleet, probe: QuotaProbe, ns: str, name: str) -> dict[str, Any]:
    """Create a Workspace on QUOTA_TYPE; wait until it shows QuotaExceeded."""
    started = time.monotonic()
    await fleet.create_workspaces([workspace_doc(name, ns, instance_type=QUOTA_TYPE)])

    async def surfaced() -> bool:
        ws = await fleet.client.get(WORKSPACE, name, ns)
        cond = condition(ws, "ResourceReady")
        return bool(cond and cond.get("reason") == "QuotaExceeded")

    await eventually(surfaced, 60, interval=0.1, message=f"QuotaExceeded on Workspace {ns}/{name}",
                     describe=lambda: str(probe.log[-5:]))
    ws = await fleet.client.get(WORKSPACE, name, ns)
    return {"reconciles": probe.reconciles_until_surfaced(name), "seconds": time.monotonic() - started,
            "message": (condition(ws, "ResourceReady") or {}).get("message", "")}


@contextlib.asynccontextmanager
async def in_process_operator(plane: ControlPlane, provisioner: Any, name: str) -> AsyncIterator[Operator]:
    settings = OperatorSettings(
        provisioner=name, namespace="kaito-system", webhook=WebhookSettings(enabled=False),
        manager=ManagerSettings(http_port=None, handle_signals=False, graceful_shutdown_timeout=5))
    plane.kubectl("create", "namespace", "kaito-system", check=False)
    operator = await Operator.create(settings, kubeconfig=plane.kubeconfig, provisioner=provisioner)
    task = asyncio.create_task(operator.run())
    try:
        await eventually(lambda: operator.manager.ready, 60, message="operator ready")
        yield operator
        assert not task.done(), task
    finally:
        operator.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


async def test_simulated_cloud_failing_30_percent_converges(private_plane: ControlPlane, fleet: Fleet,
                                                           tmp_path: Path) -> None:
    """30% of creates fail before doing anything, and 30% of the rest launch the node and then lose the answer:
    every Machine still gets exactly one node launch (one audited Node POST, whatever it was answered)."""
    seed = int(os.environ.get("KAITO_RELIABILITY_SEED", random.randrange(1 << 30)))
    row = record(ReliabilityRow("provider faults: simulated 30% retryable + 30% answers lost", notes=f"seed {seed}"))
    ns = "faults-sim"
    private_plane.kubectl("create", "namespace", ns)
    await fleet.start([ns])
    kubeconfig, user = operator_kubeconfig(private_plane, tmp_path)
    op = OperatorProcess(kubeconfig, tmp_path, identity="faults-sim", provisioner_settings={
        "retryable_error_rate": 0.3, "lost_answer_rate": 0.3, "retryable_after": 0.5, "seed": seed})
    op.start()
    try:
        await eventually(op.ready, 90, message="operator /readyz", describe=op.tail)
        started = time.monotonic()
        await fleet.create_workspaces([workspace_doc(f"ws-{i:03d}", ns) for i in range(WORKSPACES)])
        await eventually(lambda: fleet.ready_count() == WORKSPACES, 240, message=f"all {WORKSPACES} Ready",
                         describe=lambda: str(fleet.not_ready()))
        up = time.monotonic() - started
        await fleet.delete_workspaces()
        started = time.monotonic()
        try:
            await eventually(lambda: not any(fleet.counts()[k] for k in ("workspaces", "machines", "nodes")), 120,
                             message="nothing left", describe=lambda: str(fleet.leftovers()))
        finally:
            row.objects_left = await objects_left(fleet.client, [ns])
        down = time.monotonic() - started
        errors = [str(line.get("error", "")) for line in op.log_lines()]
        row.faults_injected = sum("injected: retryable_error_rate" in e for e in errors)
        row.answers_lost = sum("injected: lost_answer_rate" in e for e in errors)
        launches = audited_creates(private_plane, user, "nodes")
        row.provider_creates = sum(launches.values())
        twice = repeated(launches)
        row.objects_created = len(fleet.machine_uids) + len(fleet.node_uids) + WORKSPACES
        row.duplicates = len(fleet.duplicates({})) + len(twice)
        row.max_convergence_s = max(up, down)
        assert row.objects_left == 0, "objects left after the delete"
        assert row.faults_injected >= WORKSPACES * 0.1, f"only {row.faults_injected} faults were injected"
        assert row.answers_lost >= WORKSPACES * 0.05, f"only {row.answers_lost} answers were lost"
        assert row.provider_creates >= WORKSPACES, f"{row.provider_creates} node launches audited"
        assert not twice, f"nodes launched twice: {twice}"
        assert not fleet.duplicates({}), fleet.duplicates({})
        assert op.alive(), op.tail()
        row.passed = True
    finally:
        op.stop()


async def test_simulated_quota_error_reaches_the_workspace_within_one_reconcile(
        private_plane: ControlPlane, fleet: Fleet) -> None:
    row = record(ReliabilityRow("quota error -> Workspace (simulated)"))
    ns = "quota-sim"
    private_plane.kubectl("create", "namespace", ns)
    await fleet.start([ns])
    provisioner = SimulatedProvisioner(SimulatedSettings(launch_delay=0, quota_exceeded=[QUOTA_TYPE]))
    async with in_process_operator(private_plane, provisioner, "simulated") as operator:
        probe = QuotaProbe(operator)
        seen = await _quota_surfaces(fleet, probe, ns, "over-quota")
    row.faults_injected = 1
    row.max_convergence_s = seen["seconds"]
    row.notes = f"surfaced by reconcile #{seen['reconciles']} after the Machine's error"
    assert "quota" in seen["message"].lower(), seen
    assert seen["reconciles"] == 1, (seen, probe.log)
    row.passed = True


class FlakyARM(FakeARM):
    """The fake ARM with a fault on a random 30% of requests (token requests excepted)."""

    def __init__(self, *, rate: float, seed: int, hang: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.rate = rate
        self.rng = random.Random(seed)
        self.hang = hang
        self.injected: Counter[str] = Counter()
        self.pools_created: Counter[str] = Counter()
        """Agent pool name -> PUTs that were executed (reached the fake's handler), whatever they answered:
        a second PUT of a pool is a duplicate create even when answered 200 (exists) or 409 (in progress)."""

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route, _ = self._route(request.method, request.path)
        if route != "token" and self.rate and self.rng.random() < self.rate:
            kind = self.rng.choice(["429", "500", "timeout", "drop", "lost"])
            self.injected[kind] += 1
            if kind == "lost":  # executed, then the answer lost: the caller sees a broken connection
                await self._execute(request, route, handler)
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            if kind == "429":
                return arm_error(429, "TooManyRequests", "injected throttling", {"Retry-After": "1"})
            if kind == "500":
                return arm_error(500, "InternalServerError", "injected server error")
            if kind == "timeout":
                await asyncio.sleep(self.hang)  # past the client's read timeout
                return arm_error(504, "GatewayTimeout", "injected hang")
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        return await self._execute(request, route, handler)

    async def _execute(self, request: web.Request, route: str, handler: Any) -> web.StreamResponse:
        if route == "agentPool" and request.method == "PUT":
            self.pools_created[request.path.rsplit("/", 1)[-1]] += 1
        response: web.StreamResponse = await super()._middleware(request, handler)
        return response


async def test_aks_against_a_fake_arm_failing_30_percent(private_plane: ControlPlane, fleet: Fleet,
                                                        tmp_path: Path) -> None:
    seed = int(os.environ.get("KAITO_RELIABILITY_SEED", random.randrange(1 << 30)))
    row = record(ReliabilityRow("provider faults: AKS, fake ARM 30% 429/500/timeout/drop/lost answer",
                                notes=f"seed {seed}"))
    ns = "faults-aks"
    private_plane.kubectl("create", "namespace", ns)
    await fleet.start([ns])
    quotas = {**DEFAULT_QUOTAS, "cores": (0, 100_000), "standardNCSv3Family": (0, 100_000),
              "standardNCADSA100v4Family": (0, 0)}
    arm = FlakyARM(rate=0.3, seed=seed, hang=4.0, certs=write_certs(tmp_path / "arm"), op_seconds=0.5,
                   poll_retry_after="1", quotas=quotas)
    await arm.start()
    kube_api = await api_client_for(private_plane.kubeconfig)
    arm.kube_api = kube_api
    provisioner = AKSProvisioner(settings_for(arm, arm_request_timeout_seconds=2, arm_retry_total=3),
                                 credential=FakeCredential())
    try:
        async with in_process_operator(private_plane, provisioner, "aks") as operator:
            await _aks_run(fleet, arm, QuotaProbe(operator), ns, row)
    finally:
        await arm.stop()
        await kube_api.close()


async def _aks_run(fleet: Fleet, arm: FlakyARM, probe: QuotaProbe, ns: str, row: ReliabilityRow) -> None:
    # Quota first: the Workspace's own reconciles are counted.
    seen = await _quota_surfaces(fleet, probe, ns, "aks-over-quota")
    row.notes += f"; quota surfaced by reconcile #{seen['reconciles']}"
    assert "quota" in seen["message"].lower(), seen
    assert seen["reconciles"] == 1, (seen, probe.log)
    await fleet.client.delete(WORKSPACE, "aks-over-quota", ns)
    started = time.monotonic()
    names = [f"aks-{i:02d}" for i in range(AKS_WORKSPACES)]
    await fleet.create_workspaces([workspace_doc(n, ns) for n in names])

    def figures() -> None:
        row.faults_injected = sum(arm.injected.values())
        row.answers_lost = arm.injected["lost"]
        row.provider_creates = sum(arm.pools_created.values())
        row.objects_created = len(arm.pools_created) + len(fleet.machine_uids) + len(fleet.node_uids)
        row.duplicates = len(repeated(arm.pools_created)) + len(fleet.duplicates({}))

    try:
        await eventually(lambda: fleet.ready_count() == AKS_WORKSPACES, 300,
                         message=f"all {AKS_WORKSPACES} Ready through a flaky ARM",
                         describe=lambda: f"{dict(arm.injected)} {fleet.not_ready(3)}")
        up = time.monotonic() - started
        assert len(arm.pools) == AKS_WORKSPACES, sorted(arm.pools)
        await fleet.delete_workspaces()
        started = time.monotonic()
        try:
            await eventually(lambda: not any(fleet.counts()[k] for k in ("workspaces", "machines", "nodes"))
                             and not arm.pools, 300, message="nothing left (and no agent pool)",
                             describe=lambda: f"{fleet.leftovers()} pools={sorted(arm.pools)} {dict(arm.injected)}")
        finally:
            row.objects_left = len(arm.pools) + await objects_left(fleet.client, [ns])
        down = time.monotonic() - started
        row.max_convergence_s = max(up, down)
    finally:
        figures()
        row.notes += f"; faults {dict(arm.injected)}"
    assert row.objects_left == 0, "objects left after the delete"
    assert row.faults_injected >= 10, dict(arm.injected)
    assert row.answers_lost >= 1, f"no answer was lost: {dict(arm.injected)}"
    assert not repeated(arm.pools_created), f"agent pools created (PUT executed) twice: {repeated(arm.pools_created)}"
    assert not fleet.duplicates({}), fleet.duplicates({})
    row.passed = True
