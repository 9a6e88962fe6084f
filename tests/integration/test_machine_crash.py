"""Crash safety of the Machine controller, and collection of leaked nodes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from machine_support import (
    INSTALL,
    TEST_LABEL,
    Recorder,
    cleanup_machines,
    condition,
    eventually,
    install_machine_crd,
    machine_manifest,
    nodes_of,
    run_id,
    running_controller,
)

from kaito_core.api import Machine
from kaito_core.controllers.machine import MachineControllerSettings, MachineGarbageCollector, add_machine_controller
from kaito_core.engine import NODE, Manager, ManagerSettings
from kaito_core.provisioning import MACHINE, NodeRef, SimulatedProvisioner, SimulatedSettings
from kaito_core.provisioning.identity import InstallIdentity
from kaito_core.testing import Cluster, gpu_node_manifest


async def test_killed_between_create_and_status_write_still_one_node(kube_cluster: Cluster) -> None:
    run = run_id()
    name = f"crash-{run}"
    created = asyncio.Event()

    async def hang(_: NodeRef) -> None:
        created.set()
        await asyncio.Event().wait()  # the process "dies" here, before the status write

    first = Recorder(SimulatedProvisioner(SimulatedSettings(launch_delay=0)), after_create=hang)
    manager = await Manager.from_kubeconfig(kube_cluster.kubeconfig, ManagerSettings(
        http_port=None, handle_signals=False, graceful_shutdown_timeout=0.5))
    add_machine_controller(manager, first, MachineControllerSettings(  # type: ignore[arg-type]
        machine_selector=f"{TEST_LABEL}={run}", gc_enabled=False, poll_interval=0.5))
    client = manager.client
    await install_machine_crd(client)
    task = asyncio.create_task(manager.run())
    await client.create(machine_manifest(name, run))
    await asyncio.wait_for(created.wait(), 30)
    task.cancel()  # abrupt: no stop(), the reconcile is cut off mid-flight
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)

    machine = await client.get(MACHINE, name)
    assert not (machine.get("status") or {}).get("providerID"), "the crash came too late to test anything"
    assert len(await nodes_of(client, name)) == 1
    await client.close()

    # A fresh process with a fresh provisioner picks up where the dead one stopped.
    second = SimulatedProvisioner(SimulatedSettings(launch_delay=0))
    async with running_controller(kube_cluster.kubeconfig, second, run) as (manager2, _):
        client2 = manager2.client

        async def ready() -> bool:
            return condition(await client2.get_or_none(MACHINE, name), "Ready").get("status") == "True"

        await eventually(ready, 60, message="Machine Ready after the restart")
        assert len(await nodes_of(client2, name)) == 1, "a second node was made"
        assert second.calls["nodes_created"] == 0, "the restarted controller made a new node instead of adopting"
        machine = await client2.get(MACHINE, name)
        assert machine["status"]["nodeName"] == name
        await cleanup_machines(client2, run)
        assert not await nodes_of(client2, name)


async def test_leaked_nodes_are_collected(kube_cluster: Cluster) -> None:
    run = run_id()
    async with running_controller(kube_cluster.kubeconfig, SimulatedProvisioner(), run,
                                  gc_enabled=True, gc_interval=0.5, gc_grace_period=0) as (manager, parts):
        client = manager.client
        await install_machine_crd(client)
        simulated = SimulatedProvisioner()
        ghost = Machine.from_dict(machine_manifest(f"ghost-{run}", run))
        kept = Machine.from_dict(machine_manifest(f"kept-{run}", f"other-{run}"))
        # Our labels (machine, provisioner, workspace) but no install identity, or another
        # install's: a user's node dressed as ours, or what a second operator in the cluster made.
        # Labels are not proof of ownership; neither is ever deleted.
        pretender = Machine.from_dict(machine_manifest(f"pretender-{run}", run, install=None))
        other = InstallIdentity(cluster_id="machine-tests", namespace="another-install")
        neighbour = Machine.from_dict(machine_manifest(f"neighbour-{run}", run, install=other))
        # A Machine this controller does not reconcile (other selector) still protects its node.
        await client.create(kept.to_dict())
        for machine in (ghost, kept, pretender, neighbour):
            await client.create(simulated.node_manifest(machine, None), kind=NODE)
        # Ours by every label, for the ghost Machine, but not the node the provider listed (no
        # providerID yet): the collector deletes the node it listed, not whatever shares its labels.
        twin = simulated.node_manifest(ghost, None)
        twin["metadata"]["name"] = f"twin-{run}"
        del twin["spec"]["providerID"]
        twin["metadata"]["labels"]["kaito.sh/provisioner"] = "someone-else"
        await client.create(twin, kind=NODE)
        foreign: dict[str, Any] = gpu_node_manifest(f"foreign-{run}", labels={"team": "x"})
        await client.create(foreign, kind=NODE)

        await eventually(lambda: _missing(client, f"ghost-{run}"), 30, message="leaked node collected")
        assert parts.collector is not None
        assert f"kwok://ghost-{run}" in parts.collector.collected
        await asyncio.sleep(1.5)  # a few more passes
        assert await client.get_or_none(NODE, f"kept-{run}") is not None, "a node whose Machine exists was collected"
        assert await client.get_or_none(NODE, f"foreign-{run}") is not None, "a node without our labels was collected"
        assert await client.get_or_none(NODE, f"pretender-{run}") is not None, \
            "a node with our labels but no install identity was collected"
        assert await client.get_or_none(NODE, f"neighbour-{run}") is not None, \
            "another install's node was collected"
        assert await client.get_or_none(NODE, f"twin-{run}") is not None, \
            "a Node the provider did not list was deleted because it shares the leaked Machine's labels"
        assert parts.collector.collected == [f"kwok://ghost-{run}"]
        for node in (f"kept-{run}", f"foreign-{run}", f"pretender-{run}", f"neighbour-{run}", f"twin-{run}"):
            await client.delete(NODE, node, missing_ok=True)
        await client.delete(MACHINE, f"kept-{run}", missing_ok=True)


async def test_grace_period_protects_young_nodes(kube_cluster: Cluster) -> None:
    run = run_id()
    async with running_controller(kube_cluster.kubeconfig, SimulatedProvisioner(), run) as (manager, parts):
        client = manager.client
        young = Machine.from_dict(machine_manifest(f"young-{run}", run))
        await client.create(SimulatedProvisioner().node_manifest(young, None), kind=NODE)
        collector = MachineGarbageCollector(client, parts.handle, INSTALL,
                                            MachineControllerSettings(gc_grace_period=3600))
        assert await collector.collect() == []
        assert await client.get_or_none(NODE, f"young-{run}") is not None
        collector = MachineGarbageCollector(client, parts.handle, INSTALL, MachineControllerSettings(gc_grace_period=0))
        assert f"kwok://young-{run}" in await collector.collect()
        assert await client.get_or_none(NODE, f"young-{run}") is None


async def _missing(client: Any, name: str) -> bool:
    return await client.get_or_none(NODE, name) is None
