"""pytest fixtures for tests against a real control plane.

Enable with ``pytest_plugins = ["kaito_core.testing.pytest_plugin"]`` in a
``conftest.py``. Fixtures:

``kube_cluster``        session-scoped cluster (full control plane built here,
                        or ``KAITO_TEST_KUBECONFIG`` / ``KAITO_TEST_K3S``)
``kube_api``            an async ``kubernetes_asyncio`` ApiClient for it
``kube_namespace``      a fresh namespace per test, deleted afterwards
``make_gpu_node``       async factory for simulated GPU nodes kwok marks Ready
``light_control_plane`` a private etcd + kube-apiserver a test may restart or compact
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from kaito_core.testing.clusters import Cluster, cluster_from_environment
from kaito_core.testing.controlplane import ControlPlane, ControlPlaneMode
from kaito_core.testing.nodes import create_gpu_node

__all__ = [
    "api_client_for",
    "kube_api",
    "kube_cluster",
    "kube_namespace",
    "light_control_plane",
    "make_gpu_node",
]

_CLUSTER_FIXTURES = {"kube_cluster", "kube_api", "kube_namespace", "make_gpu_node"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tag tests that need a control plane, so ``-m 'not controlplane'`` runs the rest."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _CLUSTER_FIXTURES or "light_control_plane" in names:
            item.add_marker(pytest.mark.controlplane)


async def api_client_for(kubeconfig: Path) -> client.ApiClient:
    """An ApiClient configured from a kubeconfig file (the caller closes it)."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[Cluster]:
    cluster = cluster_from_environment(ControlPlaneMode.FULL)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def light_control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    if os.environ.get("KAITO_TEST_KUBECONFIG"):
        pytest.skip("needs a private control plane it may restart; KAITO_TEST_KUBECONFIG points elsewhere")
    with ControlPlane(mode=ControlPlaneMode.LIGHT, workdir=tmp_path / "cp") as plane:
        yield plane


@pytest.fixture
async def kube_api(kube_cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    api = await api_client_for(kube_cluster.kubeconfig)
    async with api:
        yield api


@pytest.fixture
async def kube_namespace(kube_api: client.ApiClient) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    body: Any = {"metadata": {"name": name, "labels": {"kaito.sh/test": "true"}}}
    await core.create_namespace(body, _request_timeout=10)
    yield name
    with contextlib.suppress(client.ApiException):
        await core.delete_namespace(name, _request_timeout=10)


@pytest.fixture
async def make_gpu_node(kube_api: client.ApiClient) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    created: list[str] = []

    async def factory(name: str | None = None, **kwargs: Any) -> Any:
        node_name = name or f"gpu-{uuid.uuid4().hex[:8]}"
        created.append(node_name)
        return await create_gpu_node(kube_api, node_name, **kwargs)

    yield factory
    core = client.CoreV1Api(kube_api)
    for name in created:
        with contextlib.suppress(client.ApiException):
            await core.delete_node(name, _request_timeout=10)
