"""Launch and registration timeouts: a False condition that says so, and a fresh attempt; never a hang."""

from __future__ import annotations

from typing import Any

from machine_support import (
    cleanup_machines,
    condition,
    eventually,
    machine_manifest,
    nodes_of,
    run_id,
    running_controller,
)

from kaito_core.controllers.machine import ANNOTATION_ATTEMPT
from kaito_core.provisioning import MACHINE, SimulatedProvisioner, SimulatedSettings
from kaito_core.testing import Cluster


def _attempt(machine: dict[str, Any] | None) -> int:
    return int(((machine or {}).get("metadata") or {}).get("annotations", {}).get(ANNOTATION_ATTEMPT, "1"))


async def test_launch_timeout_gives_a_false_condition_and_a_fresh_attempt(kube_cluster: Cluster) -> None:
    run = run_id()
    name = f"slow-{run}"
    # create() takes an hour: the provider never produces a node in time.
    provisioner = SimulatedProvisioner(SimulatedSettings(launch_delay=3600))
    async with running_controller(kube_cluster.kubeconfig, provisioner, run, launch_timeout=1.5) as (manager, _):
        client = manager.client
        await client.create(machine_manifest(name, run))

        async def timed_out() -> bool:
            machine = await client.get_or_none(MACHINE, name)
            cond = condition(machine, "Launched")
            return cond.get("status") == "False" and cond.get("reason") == "LaunchTimeout" and _attempt(machine) >= 2

        await eventually(timed_out, 30, message="LaunchTimeout condition and a second attempt")
        machine = await client.get(MACHINE, name)
        cond = condition(machine, "Launched")
        assert "no instance was launched within 1.5s" in cond["message"] or "did not launch" in cond["message"]
        assert "trying again with a fresh node (attempt " in cond["message"], cond["message"]
        assert condition(machine, "Ready")["status"] == "False"
        await eventually(lambda: provisioner.calls["create"] >= 2, 10, message="create called again")
        assert provisioner.calls["delete"] >= 1
        assert not await nodes_of(client, name)
        await cleanup_machines(client, run)


async def test_registration_timeout_replaces_the_instance(kube_cluster: Cluster) -> None:
    run = run_id()
    name = f"lost-{run}"
    # The instance "launches" (a providerID) but its Node never joins.
    provisioner = SimulatedProvisioner(SimulatedSettings(launch_delay=0, register_nodes=False))
    async with running_controller(kube_cluster.kubeconfig, provisioner, run,
                                  registration_timeout=1.5) as (manager, _):
        client = manager.client
        await client.create(machine_manifest(name, run))

        async def waiting() -> bool:
            machine = await client.get_or_none(MACHINE, name)
            return condition(machine, "Launched").get("status") == "True" and \
                condition(machine, "Registered").get("status") == "Unknown"

        await eventually(waiting, 20, interval=0.1, message="launched, waiting to register")
        machine = await client.get(MACHINE, name)
        assert "waiting for a Node with providerID kwok://" in condition(machine, "Registered")["message"]

        async def timed_out() -> bool:
            machine = await client.get_or_none(MACHINE, name)
            cond = condition(machine, "Registered")
            return cond.get("status") == "False" and cond.get("reason") == "RegistrationTimeout" and \
                _attempt(machine) >= 2

        await eventually(timed_out, 30, message="RegistrationTimeout and a fresh attempt")
        cond = condition(await client.get(MACHINE, name), "Registered")
        assert "joined within 1.5s" in cond["message"] and "fresh node" in cond["message"], cond["message"]
        await eventually(lambda: provisioner.calls["create"] >= 2, 10, message="a fresh instance requested")
        assert provisioner.calls["delete"] >= 1
        await cleanup_machines(client, run)
