"""The AKS provisioner driven by kaito-core's Machine controller (engine Manager + Machine reconciler),
against the real control plane (kwok) and the fake ARM: a Machine for Standard_NC6s_v3 goes Ready on
exactly one agent pool, deleting it deletes the pool and the Node; a quota shortfall lands on the
Machine's conditions with the figures and no create call."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aks_support import FakeCredential, gpu_machine, settings_for
from fake_arm import FakeARM
from kaito_provisioner_aks import AKSProvisioner, pool_name
from kubernetes_asyncio import client as k8s

from kaito_core.controllers.machine import MachineControllerSettings, add_machine_controller
from kaito_core.engine import Client, Manager, ManagerSettings
from kaito_core.testing import Cluster

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "kaito.sh", "v1alpha1", "machines"


@pytest.fixture(params=[True, False], ids=["wait", "nowait"])
async def controller(fake_arm: FakeARM, kube_cluster: Cluster, arm_kube: Client, machine_crd_installed: None,
                     request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A running manager with the Machine controller on the AKS provisioner (create waiting for the pool,
    or not: AKS_WAIT_FOR_CREATE); yields the run's label value."""
    run = uuid.uuid4().hex[:8]
    settings = ManagerSettings(namespace=None, http_port=None, handle_signals=False, graceful_shutdown_timeout=5)
    manager = await Manager.from_kubeconfig(kube_cluster.kubeconfig, settings)
    provisioner = AKSProvisioner(settings_for(fake_arm, aks_wait_for_create=request.param),
                                 credential=FakeCredential())
    add_machine_controller(manager, provisioner, MachineControllerSettings(
        poll_interval=0.5, gc_enabled=False, machine_selector=f"kaito.sh/test-run={run}"))
    task = asyncio.create_task(manager.run())
    try:
        async with asyncio.timeout(30):
            while True:
                if manager.ready:
                    break
                await asyncio.sleep(0.1)
        yield run
    finally:
        manager.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await manager.client.close()


def _condition(machine: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (machine.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


async def _wait_machine(custom: k8s.CustomObjectsApi, name: str, check: Any, timeout: float = 45.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            try:
                obj = await custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name, _request_timeout=10)
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise
                obj = None
            if check(obj):
                return obj
            await asyncio.sleep(0.2)


async def test_machine_goes_ready_on_one_agent_pool_and_delete_removes_it(
        fake_arm: FakeARM, controller: str, kube_api: k8s.ApiClient) -> None:
    custom = k8s.CustomObjectsApi(kube_api)
    name = f"ws-phi3-{controller}"
    body = gpu_machine(name)
    body["metadata"]["labels"]["kaito.sh/test-run"] = controller
    await custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, _request_timeout=10)

    ready = await _wait_machine(custom, name, lambda m: _condition(m or {}, "Ready").get("status") == "True")
    pool = pool_name(name)
    assert list(fake_arm.pools) == [pool]
    assert fake_arm.calls["PUT agentPool"] == 1
    assert ready["status"]["providerID"] == fake_arm.provider_id(pool)
    assert ready["status"]["nodeName"] == fake_arm.node_name(pool)
    for type_ in ("Launched", "Registered", "Initialized"):
        assert _condition(ready, type_).get("status") == "True", type_
    node = await k8s.CoreV1Api(kube_api).read_node(fake_arm.node_name(pool), _request_timeout=10)
    assert node.metadata.labels["kaito.sh/machine"] == name

    await custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name, _request_timeout=10)
    await _wait_machine(custom, name, lambda m: m is None)
    assert fake_arm.pools == {}
    with pytest.raises(k8s.ApiException) as info:
        await k8s.CoreV1Api(kube_api).read_node(fake_arm.node_name(pool), _request_timeout=10)
    assert info.value.status == 404
    print("ARM calls for one Machine through the reconciler (create+delete):", dict(fake_arm.calls))


async def test_quota_shortfall_appears_on_the_machine_conditions(
        fake_arm: FakeARM, controller: str, kube_api: k8s.ApiClient) -> None:
    custom = k8s.CustomObjectsApi(kube_api)
    name = f"ws-a100-{controller}"
    body = gpu_machine(name, "Standard_NC24ads_A100_v4")
    body["metadata"]["labels"]["kaito.sh/test-run"] = controller
    await custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, _request_timeout=10)
    try:
        failed = await _wait_machine(custom, name,
                                     lambda m: _condition(m or {}, "Launched").get("reason") == "QuotaExceeded")
        message = _condition(failed, "Launched")["message"]
        assert ("Standard_NC24ads_A100_v4 needs 24 vCPUs of family standardNCADSA100v4Family; "
                "quota 0 of 0 left in westus2") in message
        assert _condition(failed, "Launched")["status"] == "False"
        assert fake_arm.calls["PUT agentPool"] == 0
    finally:
        await custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name, _request_timeout=10)
        await _wait_machine(custom, name, lambda m: m is None)
