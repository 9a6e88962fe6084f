"""Garbage collection of leaked agent pools: ours (by label), Machine gone, older than the grace period."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from aks_support import MakeProvisioner, gpu_machine
from fake_arm import FakeARM
from kaito_provisioner_aks import pool_name
from kubernetes_asyncio import client as k8s

from kaito_core.engine import Client


def _labels(machine: str, age: float) -> dict[str, str]:
    created = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(time.time() - age))
    return {"kaito.sh/provisioner": "aks", "kaito.sh/machine": machine, "kaito.sh/machine-type": "gpu",
            "kaito.sh/creation-timestamp": created, "kaito.sh/workspace": "w"}


def _leaks(fake: FakeARM) -> dict[str, str]:
    """A mix of pools; returns role -> pool name."""
    pools = {
        "leaked": pool_name("gone-0"),
        "young": pool_name("gone-young-0"),
        "live": pool_name("live-0"),
    }
    fake.add_pool(pools["leaked"], node_labels=_labels("gone-0", age=3600))
    fake.add_pool(pools["young"], node_labels=_labels("gone-young-0", age=5))
    fake.add_pool(pools["live"], node_labels=_labels("live-0", age=3600))
    fake.add_pool("nodepool1", vm_size="Standard_D4s_v3", mode="System")  # the cluster's own: no labels of ours
    fake.add_pool("gpuother", node_labels={"kaito.sh/machine-type": "gpu"})  # someone else's GPU pool
    # our labels but a name we would not derive from its Machine: left to a person
    fake.add_pool("renamed1", node_labels=_labels("gone-1", age=3600))
    return pools


async def test_leaked_pool_is_collected_and_nothing_else(fake_arm: FakeARM,
                                                         make_provisioner: MakeProvisioner) -> None:
    provisioner = await make_provisioner(aks_gc_grace_seconds=600)
    pools = _leaks(fake_arm)
    listed = {ref.machine_name for ref in await provisioner.list()}
    assert listed == {"gone-0", "gone-young-0", "live-0", "gone-1"}

    collected = await provisioner.collect_garbage(live_machines={"live-0"})
    assert collected == [pools["leaked"]]
    assert set(fake_arm.pools) == {pools["young"], pools["live"], "nodepool1", "gpuother", "renamed1"}
    assert fake_arm.calls["DELETE agentPool"] == 1

    # once past the grace period the young one goes too
    collected = await provisioner.collect_garbage(live_machines={"live-0"}, now=time.time() + 700)
    assert collected == [pools["young"]]


async def test_gc_without_a_view_of_the_machines_deletes_nothing(fake_arm: FakeARM,
                                                                 make_provisioner: MakeProvisioner) -> None:
    provisioner = await make_provisioner()  # no Kubernetes client: cannot tell which Machines exist
    _leaks(fake_arm)
    assert await provisioner.collect_garbage() == []
    assert fake_arm.calls["DELETE agentPool"] == 0


async def test_gc_lists_machines_from_the_cluster(fake_arm: FakeARM, make_provisioner: MakeProvisioner,
                                                  kube_api: k8s.ApiClient, machine_crd_installed: None,
                                                  arm_kube: Client) -> None:
    live = f"live-{uuid.uuid4().hex[:6]}"
    custom = k8s.CustomObjectsApi(kube_api)
    body = gpu_machine(live)
    await custom.create_cluster_custom_object("kaito.sh", "v1alpha1", "machines", body, _request_timeout=10)
    try:
        fake_arm.add_pool(pool_name(live), node_labels=_labels(live, age=3600))
        fake_arm.add_pool(pool_name("gone-0"), node_labels=_labels("gone-0", age=3600))
        provisioner = await make_provisioner(aks_gc_grace_seconds=60)
        collected = await provisioner.collect_garbage()
        assert collected == [pool_name("gone-0")]
        assert set(fake_arm.pools) == {pool_name(live)}
    finally:
        with contextlib.suppress(k8s.ApiException):
            await custom.delete_cluster_custom_object("kaito.sh", "v1alpha1", "machines", live, _request_timeout=10)


async def test_the_periodic_collector_runs_when_configured(fake_arm: FakeARM, make_provisioner: MakeProvisioner,
                                                          kube_api: k8s.ApiClient, machine_crd_installed: None,
                                                          arm_kube: Client) -> None:
    fake_arm.add_pool(pool_name("gone-2"), node_labels=_labels("gone-2", age=3600))
    await make_provisioner(aks_gc_interval_seconds=0.3, aks_gc_grace_seconds=60)
    async with asyncio.timeout(15):
        await fake_arm.wait_for_call("DELETE agentPool")
    await fake_arm.wait_idle()
    assert pool_name("gone-2") not in fake_arm.pools
