"""Fixtures for the AKS provisioner tests: a fake ARM over HTTPS on loopback, and provisioners pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aks_support import FakeCredential, MakeProvisioner, settings_for
from fake_arm import FakeARM, write_certs
from kaito_provisioner_aks import AKSProvisioner
from kubernetes_asyncio import client as k8s

from kaito_core.api.crd import machine_crd
from kaito_core.engine import ApiClientTransport, Client
from kaito_core.provisioning import ProvisionerContext


@pytest.fixture(scope="session")
def arm_certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return write_certs(tmp_path_factory.mktemp("fake-arm-certs"))


@pytest.fixture
async def fake_arm(arm_certs: tuple[Path, Path, Path]) -> AsyncIterator[FakeARM]:
    """A fake ARM on 127.0.0.1 (HTTPS); add ``arm_kube`` to have it make Nodes in the test cluster."""
    fake = FakeARM(certs=arm_certs, op_seconds=1.0, poll_retry_after="1")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def arm_kube(fake_arm: FakeARM, kube_api: k8s.ApiClient) -> AsyncIterator[Client]:
    """Wire the fake to the test cluster: it creates/deletes the pools' Nodes there, and provisioners get
    kaito-core's engine client on it (what the manager hands plugins)."""
    fake_arm.kube_api = kube_api
    kube = Client(ApiClientTransport(kube_api))
    fake_arm.engine_client = kube
    yield kube
    await fake_arm.wait_idle()
    core = k8s.CoreV1Api(kube_api)
    for node in list(fake_arm.nodes.values()):
        with contextlib.suppress(k8s.ApiException):
            await core.delete_node(node, _request_timeout=10)


@pytest.fixture
async def make_provisioner(fake_arm: FakeARM) -> AsyncIterator[MakeProvisioner]:
    """Started AKS provisioners against the fake (closed afterwards); kwargs override settings."""
    made: list[AKSProvisioner] = []

    async def factory(*, start: bool = True, **overrides: Any) -> AKSProvisioner:
        provisioner = AKSProvisioner(settings_for(fake_arm, **overrides), credential=FakeCredential())
        made.append(provisioner)
        if start:
            ctx = ProvisionerContext(client=fake_arm.engine_client, logger=structlog.get_logger("aks-test"))
            await provisioner.start(ctx)
        return provisioner

    yield factory
    for provisioner in made:
        await provisioner.close()


@pytest.fixture
async def machine_crd_installed(kube_api: k8s.ApiClient) -> AsyncIterator[None]:
    ext = k8s.ApiextensionsV1Api(kube_api)
    crd: Any = machine_crd()
    with contextlib.suppress(k8s.ApiException):
        await ext.create_custom_resource_definition(crd, _request_timeout=10)
    async with asyncio.timeout(30):
        while True:
            got = await ext.read_custom_resource_definition(crd["metadata"]["name"], _request_timeout=10)
            if any(c.type == "Established" and c.status == "True" for c in got.status.conditions or []):
                break
            await asyncio.sleep(0.2)
    yield
