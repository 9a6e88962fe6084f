"""Leaked agent pools go through kaito-core's one leak collector: a pool is deleted only when this
install made it (the ``kaito.sh/install`` node label and the ``kaito-install`` ARM tag agree with
this install), under a name derived from the Machine it names, that Machine is gone, and it is
older than the grace period. A user's pool dressed in our labels, another install's pool, a
renamed pool and the cluster's own pools are never touched."""

from __future__ import annotations

import time
import uuid
from typing import Any

import structlog
from aks_support import MakeProvisioner, gpu_machine
from fake_arm import FakeARM
from kaito_provisioner_aks import pool_name
from kubernetes_asyncio import client as k8s

from kaito_core.controllers.machine import MachineControllerSettings, MachineGarbageCollector
from kaito_core.engine import Client
from kaito_core.provisioning import ProvisionerContext
from kaito_core.provisioning.handle import ProvisionerHandle
from kaito_core.provisioning.identity import INSTALL_TAG, InstallIdentity

OURS = InstallIdentity(cluster_id="aks-gc-tests", namespace="kaito-system")
OTHER = InstallIdentity(cluster_id="aks-gc-tests", namespace="kaito-other")


def _labels(machine: str, age: float, install: InstallIdentity | None = OURS) -> dict[str, str]:
    created = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(time.time() - age))
    labels = {"kaito.sh/provisioner": "aks", "kaito.sh/machine": machine, "kaito.sh/machine-type": "gpu",
              "kaito.sh/creation-timestamp": created, "kaito.sh/workspace": "w"}
    if install is not None:
        labels["kaito.sh/install"] = install.value
    return labels


def _tags(install: InstallIdentity | None = OURS) -> dict[str, str]:
    return {INSTALL_TAG: install.value} if install is not None else {}


def _pools(fake: FakeARM, run: str) -> dict[str, str]:
    """A mix of pools; returns role -> pool name."""
    pools = {role: pool_name(f"{role}-{run}") for role in ("leaked", "young", "live", "pretender", "neighbour",
                                                            "untagged")}
    fake.add_pool(pools["leaked"], node_labels=_labels(f"leaked-{run}", 3600), tags=_tags())
    fake.add_pool(pools["young"], node_labels=_labels(f"young-{run}", 5), tags=_tags())
    fake.add_pool(pools["live"], node_labels=_labels(f"live-{run}", 3600), tags=_tags())
    # Our labels, no install identity at all: a user's pool dressed as ours (the review's finding).
    fake.add_pool(pools["pretender"], node_labels=_labels(f"pretender-{run}", 3600, install=None))
    # Another install (another namespace of the same cluster) made this one.
    fake.add_pool(pools["neighbour"], node_labels=_labels(f"neighbour-{run}", 3600, OTHER), tags=_tags(OTHER))
    # The install label copied onto a pool by hand, without the tag we write at create.
    fake.add_pool(pools["untagged"], node_labels=_labels(f"untagged-{run}", 3600))
    fake.add_pool("nodepool1", vm_size="Standard_D4s_v3", mode="System")  # the cluster's own: no labels of ours
    fake.add_pool("gpuother", node_labels={"kaito.sh/machine-type": "gpu"})  # someone else's GPU pool
    # our labels and tags but a name we would not derive from its Machine: left to a person
    fake.add_pool("renamed1", node_labels=_labels(f"renamed-{run}", 3600), tags=_tags())
    return pools


async def test_only_this_installs_leaked_pool_is_collected(fake_arm: FakeARM, make_provisioner: MakeProvisioner,
                                                           kube_api: k8s.ApiClient, machine_crd_installed: None,
                                                           arm_kube: Client) -> None:
    run = uuid.uuid4().hex[:6]
    pools = _pools(fake_arm, run)
    custom = k8s.CustomObjectsApi(kube_api)
    await custom.create_cluster_custom_object("kaito.sh", "v1alpha1", "machines", gpu_machine(f"live-{run}"),
                                              _request_timeout=10)
    provisioner = await make_provisioner()
    listed = {ref.machine_name for ref in await provisioner.list()}
    # What the plugin made (names it derives, tags that agree); whose install it is, the collector decides.
    assert listed == {f"leaked-{run}", f"young-{run}", f"live-{run}", f"neighbour-{run}", f"pretender-{run}"}
    handle = ProvisionerHandle(provisioner, ProvisionerContext(client=arm_kube, logger=structlog.get_logger()),
                               started=True)
    clock = [time.time()]
    collector = MachineGarbageCollector(arm_kube, handle, OURS, MachineControllerSettings(gc_grace_period=600),
                                        clock=lambda: clock[0])
    try:
        collected = await collector.collect()
        await fake_arm.wait_idle()
        assert fake_arm.calls["DELETE agentPool"] == 1, collected
        assert pools["leaked"] not in fake_arm.pools
        kept: set[Any] = {pools[r] for r in ("young", "live", "pretender", "neighbour", "untagged")}
        assert kept | {"nodepool1", "gpuother", "renamed1"} == set(fake_arm.pools)

        clock[0] += 700  # past the grace period, the young one goes too; nothing else
        await collector.collect()
        await fake_arm.wait_idle()
        assert fake_arm.calls["DELETE agentPool"] == 2
        assert kept - {pools["young"]} | {"nodepool1", "gpuother", "renamed1"} == set(fake_arm.pools)
    finally:
        await custom.delete_cluster_custom_object("kaito.sh", "v1alpha1", "machines", f"live-{run}",
                                                  _request_timeout=10)


async def test_a_pool_we_create_carries_the_install_as_label_and_tag(fake_arm: FakeARM,
                                                                     make_provisioner: MakeProvisioner,
                                                                     arm_kube: Client) -> None:
    provisioner = await make_provisioner()
    machine = gpu_machine(f"stamped-{uuid.uuid4().hex[:6]}")
    machine["metadata"]["labels"].update(OURS.labels())
    await provisioner.create(machine)
    pool = fake_arm.pools[pool_name(machine["metadata"]["name"])]
    assert pool["properties"]["nodeLabels"]["kaito.sh/install"] == OURS.value
    assert pool["properties"]["tags"][INSTALL_TAG] == OURS.value
    assert [ref.machine_name for ref in await provisioner.list()] == [machine["metadata"]["name"]]
    await provisioner.delete(machine)
