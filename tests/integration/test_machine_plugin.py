"""A third-party provisioner plugin (tests/plugins/acme, its own distribution) is found and used as is."""

from __future__ import annotations

import asyncio

import pytest
from machine_support import cleanup_machines, condition, eventually, machine_manifest, run_id, running_controller

from kaito_core.engine import NODE
from kaito_core.provisioning import (
    MACHINE,
    Provisioner,
    UnknownProvisionerError,
    available_provisioners,
    load_provisioner,
)
from kaito_core.testing import Cluster


def test_the_registry_finds_and_loads_the_installed_plugin() -> None:
    assert {"acme", "simulated", "byo"} <= set(available_provisioners())
    plugin = load_provisioner("acme", {"region": "mars-2"})
    assert isinstance(plugin, Provisioner)
    assert type(plugin).__module__ == "acme_kaito"  # loaded from its own distribution, not kaito-core
    assert plugin.settings.region == "mars-2"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="invalid settings for provisioner 'acme'"):
        load_provisioner("acme", {"no_such_setting": 1})
    with pytest.raises(UnknownProvisionerError, match=r"installed: .*acme"):
        load_provisioner("acme-typo")


async def test_the_machine_controller_provisions_through_the_plugin(kube_cluster: Cluster) -> None:
    run = run_id()
    name = f"acme-m-{run}"
    plugin = load_provisioner("acme", {"region": "mars-2", "gpus_per_node": 2})
    async with running_controller(kube_cluster.kubeconfig, plugin, run) as (manager, _):
        client = manager.client
        await client.create(machine_manifest(name, run, instance_type="acme.gpu.small", gpus=2))

        async def ready() -> bool:
            return condition(await client.get_or_none(MACHINE, name), "Ready").get("status") == "True"

        await eventually(ready, 60, message="Machine Ready through the acme plugin")
        machine = await client.get(MACHINE, name)
        assert machine["status"]["providerID"] == f"acme://mars-2/{name}"
        assert machine["status"]["nodeName"] == f"acme-{name}"
        node = await client.get(NODE, f"acme-{name}")
        assert node["metadata"]["labels"]["kaito.sh/machine"] == name
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"

        # Its typed errors surface like the built-in ones.
        await client.create(machine_manifest(f"nope-{run}", run, instance_type="Standard_ND96isr_H100_v5"))

        async def unavailable() -> bool:
            cond = condition(await client.get_or_none(MACHINE, f"nope-{run}"), "Launched")
            return cond.get("reason") == "InstanceTypeUnavailable" and "Acme does not sell" in cond.get("message", "")

        await eventually(unavailable, 30, message="the plugin's typed error as a condition")

        # A Machine meant for another provisioner is left to it, with a condition saying so.
        await client.create(machine_manifest(f"other-{run}", run, instance_type="acme.gpu.small", provisioner="aks"))

        async def left_alone() -> bool:
            cond = condition(await client.get_or_none(MACHINE, f"other-{run}"), "Launched")
            return cond.get("reason") == "OtherProvisioner" and "asks for provisioner 'aks'" in cond.get("message", "")

        await eventually(left_alone, 30, message="OtherProvisioner condition")
        other = await client.get(MACHINE, f"other-{run}")
        assert not other["metadata"].get("finalizers") and not other["status"].get("providerID")
        assert await client.get_or_none(NODE, f"acme-other-{run}") is None
        await cleanup_machines(client, run)
        assert await client.get_or_none(NODE, f"acme-{name}") is None


class _NeedsCredentials:
    """A plugin whose prerequisites are missing: its start() fails until they appear."""

    name = "broken"
    settings_model = dict

    def __init__(self) -> None:
        self.starts = 0

    async def start(self, ctx: object) -> None:
        self.starts += 1
        raise RuntimeError("the Acme credentials in secret acme-creds are invalid; rotate them")

    async def create(self, machine: object) -> None: ...
    async def get(self, machine: object) -> None: ...
    async def delete(self, machine: object) -> None: ...
    async def list(self) -> list[object]:
        return []

    async def close(self) -> None: ...


async def test_a_plugin_that_cannot_start_says_so_on_the_machine(kube_cluster: Cluster) -> None:
    run = run_id()
    plugin = _NeedsCredentials()
    async with running_controller(kube_cluster.kubeconfig, plugin, run) as (manager, _):  # type: ignore[arg-type]
        client = manager.client
        await client.create(machine_manifest(f"nocreds-{run}", run))

        async def told() -> bool:
            cond = condition(await client.get_or_none(MACHINE, f"nocreds-{run}"), "Launched")
            return cond.get("status") == "False" and "provisioner 'broken' failed to start: the Acme credentials" \
                in cond.get("message", "")

        await eventually(told, 30, message="start failure on the Machine")
        await eventually(lambda: plugin.starts >= 2, 10, message="start retried")
        await client.delete(MACHINE, f"nocreds-{run}")  # the finalizer waits for a working provisioner
        await asyncio.sleep(0.5)
        assert await client.get_or_none(MACHINE, f"nocreds-{run}") is not None
        await client.patch(MACHINE, f"nocreds-{run}", {"metadata": {"finalizers": None}})
