"""The Machine controller with the simulated provisioner on the full control plane (kwok runs the nodes)."""

from __future__ import annotations

import itertools
from typing import Any

from machine_support import (
    cleanup_machines,
    condition,
    eventually,
    install_machine_crd,
    machine_manifest,
    nodes_of,
    run_id,
    running_controller,
)

from kaito_core.api import MACHINE_FINALIZER
from kaito_core.engine import EVENT, NODE, Client
from kaito_core.provisioning import MACHINE, RetryableError, SimulatedProvisioner, SimulatedSettings
from kaito_core.testing import Cluster

STARTUP_TAINT = {"key": "nvidia.com/gpu-driver", "value": "installing", "effect": "NoSchedule"}


async def _machine(client: Client, name: str) -> dict[str, Any] | None:
    return await client.get_or_none(MACHINE, name)


async def test_simulated_machine_goes_ready_and_its_node_goes_with_it(kube_cluster: Cluster) -> None:
    run = run_id()
    name = f"m-{run}"
    provisioner = SimulatedProvisioner(SimulatedSettings(launch_delay=0.5))
    async with running_controller(kube_cluster.kubeconfig, provisioner, run) as (manager, _):
        client = manager.client
        await install_machine_crd(client)
        await client.create(machine_manifest(
            name, run, instance_type="Standard_NC12s_v3", gpus=2, node_labels={"team": "vision"},
            startup_taints=[STARTUP_TAINT], workspace=("ns1", "falcon")))
        seen: list[tuple[str, str]] = []

        async def ready() -> bool:
            machine = await _machine(client, name)
            for type_ in ("Launched", "Registered", "Initialized", "Ready"):
                cond = condition(machine, type_)
                if cond.get("status") == "True" and (type_, "True") not in seen:
                    seen.append((type_, "True"))
            return condition(machine, "Ready").get("status") == "True"

        await eventually(ready, 60, interval=0.1, message="Machine Ready")
        machine = await _machine(client, name)
        assert machine is not None
        status = machine["status"]
        # The lifecycle went in order and every stage is True now.
        assert [t for t, _ in seen] == ["Launched", "Registered", "Initialized", "Ready"], seen
        for type_ in ("Launched", "Registered", "Initialized", "Ready"):
            assert condition(machine, type_)["status"] == "True", condition(machine, type_)
        assert MACHINE_FINALIZER in machine["metadata"]["finalizers"]
        assert status["providerID"] == f"kwok://{name}"
        assert status["nodeName"] == name
        assert status["allocatable"]["nvidia.com/gpu"] == "2"

        node = await client.get(NODE, name)
        labels = node["metadata"]["labels"]
        assert labels["kaito.sh/machine"] == name
        assert labels["kaito.sh/workspace"] == "falcon"
        assert labels["kaito.sh/workspacenamespace"] == "ns1"
        assert labels["node.kubernetes.io/instance-type"] == "Standard_NC12s_v3"
        assert labels["team"] == "vision"
        # GPU capacity from the SKU catalog (NC12s_v3: 2 V100, 12 vCPUs, 224Gi).
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
        assert node["status"]["capacity"]["cpu"] == "12"
        assert node["status"]["capacity"]["memory"] == "224Gi"
        taints = node["spec"].get("taints") or []
        assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in taints
        assert not any(t["key"] == STARTUP_TAINT["key"] for t in taints), "startup taint not removed"
        assert provisioner.calls["nodes_created"] == 1

        async def events() -> set[str]:
            items = (await client.list(EVENT, "default")).items
            return {e["reason"] for e in items if e["involvedObject"].get("name") == name}

        await eventually(lambda: _has(events, {"Launched", "Registered", "Initialized"}), 10,
                         message="lifecycle events")

        # A reconcile that changes nothing writes nothing.
        version = machine["metadata"]["resourceVersion"]
        await client.patch(NODE, name, {"metadata": {"annotations": {"poke": "1"}}})
        await eventually(lambda: _stable(client, name, version), 5, message="no status churn")

        await client.delete(MACHINE, name)

        async def gone() -> bool:
            return await _machine(client, name) is None and not await client.get_or_none(NODE, name)

        await eventually(gone, 30, message="Machine and its Node deleted")
        assert provisioner.calls["delete"] >= 1
        await cleanup_machines(client, run)


async def _has(events: Any, wanted: set[str]) -> bool:
    return wanted <= await events()


async def _stable(client: Client, name: str, version: str) -> bool:
    machine = await client.get(MACHINE, name)
    return bool(machine["metadata"]["resourceVersion"] == version)


async def test_capacity_and_quota_errors_become_conditions(kube_cluster: Cluster) -> None:
    run = run_id()
    provisioner = SimulatedProvisioner(SimulatedSettings(
        launch_delay=0, insufficient_capacity=["Standard_NC6s_v3"], quota_exceeded=["Standard_NC24s_v3"]))
    async with running_controller(kube_cluster.kubeconfig, provisioner, run) as (manager, _):
        client = manager.client
        await install_machine_crd(client)
        await client.create(machine_manifest(f"cap-{run}", run, instance_type="Standard_NC6s_v3"))
        await client.create(machine_manifest(f"quota-{run}", run, instance_type="Standard_NC24s_v3"))
        await client.create(machine_manifest(f"bad-{run}", run, instance_type="Standard_Nope_v9"))

        async def launched(name: str, reason: str) -> bool:
            cond = condition(await _machine(client, name), "Launched")
            return cond.get("status") == "False" and cond.get("reason") == reason

        await eventually(lambda: launched(f"cap-{run}", "InsufficientCapacity"), 30, message="capacity condition")
        await eventually(lambda: launched(f"quota-{run}", "QuotaExceeded"), 30, message="quota condition")
        await eventually(lambda: launched(f"bad-{run}", "InstanceTypeUnavailable"), 30, message="unknown type")
        cap = condition(await _machine(client, f"cap-{run}"), "Launched")["message"]
        assert "no capacity for Standard_NC6s_v3" in cap and "retrying in" in cap, cap
        quota = condition(await _machine(client, f"quota-{run}"), "Launched")["message"]
        assert "quota for standardNCSv3Family" in quota and "quota increase" in quota, quota
        bad = condition(await _machine(client, f"bad-{run}"), "Launched")["message"]
        assert "not in the GPU SKU catalog" in bad, bad
        ready = condition(await _machine(client, f"cap-{run}"), "Ready")
        assert ready["status"] == "False" and ready["reason"] == "InsufficientCapacity"
        assert not await nodes_of(client, f"cap-{run}")
        # Deleting a Machine that never launched completes.
        await cleanup_machines(client, run)


async def test_retryable_errors_are_retried_with_backoff(kube_cluster: Cluster) -> None:
    from machine_support import Recorder

    run = run_id()
    name = f"retry-{run}"
    inner = SimulatedProvisioner(SimulatedSettings(launch_delay=0))
    provisioner = Recorder(inner, fail_first=4,
                           failure=lambda: RetryableError("the cloud API timed out", after=0.25))
    async with running_controller(kube_cluster.kubeconfig, provisioner, run) as (manager, _):  # type: ignore[arg-type]
        client = manager.client
        await install_machine_crd(client)
        await client.create(machine_manifest(name, run))

        async def ready() -> bool:
            return condition(await _machine(client, name), "Ready").get("status") == "True"

        await eventually(ready, 60, message="Machine Ready after retries")
        times = provisioner.create_times
        assert len(times) >= 5, times
        gaps = [b - a for a, b in itertools.pairwise(times)][:4]
        # retry_after 0.25s doubling: 0.25, 0.5, 1, 2 (lower bounds; events only add to them)
        for gap, floor in zip(gaps, (0.24, 0.49, 0.99, 1.99), strict=True):
            assert gap >= floor, gaps
        assert inner.calls["nodes_created"] == 1
        assert len(await nodes_of(client, name)) == 1
        await cleanup_machines(client, run)


async def test_simulated_random_retryable_errors_still_converge(kube_cluster: Cluster) -> None:
    run = run_id()
    provisioner = SimulatedProvisioner(SimulatedSettings(launch_delay=0, retryable_error_rate=0.5,
                                                         retryable_after=0.1, seed=3))
    async with running_controller(kube_cluster.kubeconfig, provisioner, run) as (manager, _):
        client = manager.client
        await install_machine_crd(client)
        names = [f"r{i}-{run}" for i in range(4)]
        for name in names:
            await client.create(machine_manifest(name, run))

        async def all_ready() -> bool:
            machines = [await _machine(client, n) for n in names]
            return all(condition(m, "Ready").get("status") == "True" for m in machines)

        await eventually(all_ready, 90, message="all Machines Ready despite injected errors")
        assert provisioner.calls["create"] > len(names), provisioner.calls
        assert provisioner.calls["nodes_created"] == len(names)
        for name in names:
            assert len(await nodes_of(client, name)) == 1
        await cleanup_machines(client, run)
