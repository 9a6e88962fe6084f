"""The AKS provisioner against the fake ARM with injected faults (no Kubernetes needed: ctx.client is None,
so these check the ARM side; the Node side is in test_aks_provisioning.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog
from aks_support import MakeProvisioner, gpu_machine
from fake_arm import FakeARM
from kaito_provisioner_aks import AKSProvisioner, pool_name

from kaito_core.provisioning import (
    InstanceTypeUnavailableError,
    InsufficientCapacityError,
    ProvisionerContext,
    QuotaExceededError,
    RetryableError,
    load_provisioner,
)


async def test_a_429_storm_is_survived_honouring_retry_after(fake_arm: FakeARM,
                                                              make_provisioner: MakeProvisioner) -> None:
    provisioner = await make_provisioner()
    fake_arm.inject(4, 429, retry_after="1")  # the next four requests, whatever they are
    loop = asyncio.get_running_loop()
    started = loop.time()
    ref = await provisioner.create(gpu_machine("storm-0"))
    elapsed = loop.time() - started
    assert ref.ready and list(fake_arm.pools) == [pool_name("storm-0")]
    assert fake_arm.calls["PUT agentPool"] == 1
    throttled = [entry for entry in fake_arm.log if entry[2] == 429]
    assert len(throttled) == 4
    # each retry waited for the Retry-After the server asked for, not a tight loop
    assert elapsed >= 4.0
    gaps = [b[0] - a[0] for a, b in zip(fake_arm.log, fake_arm.log[1:], strict=False) if a[2] == 429]
    assert all(gap >= 0.9 for gap in gaps), gaps


async def test_5xx_and_dropped_connections_are_retried(fake_arm: FakeARM, make_provisioner: MakeProvisioner) -> None:
    provisioner = await make_provisioner()
    fake_arm.inject(2, 500, route="agentPool", method="GET")
    fake_arm.inject(1, 503, route="agentPool", method="PUT")
    fake_arm.inject(2, 502, route="operation")
    fake_arm.inject(1, drop=True, route="skus")
    ref = await provisioner.create(gpu_machine("flaky-0"))
    assert ref.ready
    assert list(fake_arm.pools) == [pool_name("flaky-0")]
    # the 503 PUT did nothing on the server; the retried one made the single pool
    assert fake_arm.calls["PUT agentPool"] == 2
    fake_arm.inject(2, 500, route="agentPool", method="DELETE")
    await provisioner.delete(gpu_machine("flaky-0"))
    assert fake_arm.pools == {}


async def test_a_lost_put_response_does_not_make_a_second_pool(fake_arm: FakeARM,
                                                               make_provisioner: MakeProvisioner) -> None:
    """ARM made the pool but the answer never arrived: the PUT is not sent again (not by the SDK's retry policy
    either); a GET finds the pool Creating and the create waits for it."""
    provisioner = await make_provisioner()
    fake_arm.inject(1, drop=True, after=True, method="PUT", route="agentPool")
    before = fake_arm.snapshot()
    ref = await provisioner.create(gpu_machine("lost-0"))
    assert ref.ready
    assert fake_arm.calls["PUT agentPool"] == 1
    assert list(fake_arm.pools) == [pool_name("lost-0")]
    # the lost answer was followed by a GET of the pool (then the GETs that waited for it), never a second PUT
    after_put = [key for _, key, _ in fake_arm.log[[k for _, k, _ in fake_arm.log].index("PUT agentPool") + 1:]]
    assert after_put and after_put[0] == "GET agentPool", after_put
    assert fake_arm.calls["GET agentPool"] - before["GET agentPool"] >= 2


async def test_a_lost_put_response_without_waiting_reports_the_pool_creating(
        fake_arm: FakeARM, make_provisioner: MakeProvisioner) -> None:
    """AKS_WAIT_FOR_CREATE=false: the lost answer is followed by a GET that finds the pool; no second PUT."""
    provisioner = await make_provisioner(aks_wait_for_create=False)
    fake_arm.inject(1, drop=True, after=True, method="PUT", route="agentPool")
    first = await provisioner.create(gpu_machine("lost-1"))
    assert not first.ready and "is Creating" in first.message
    await fake_arm.wait_idle()
    done = await provisioner.create(gpu_machine("lost-1"))
    assert done.ready
    assert fake_arm.calls["PUT agentPool"] == 1
    assert list(fake_arm.pools) == [pool_name("lost-1")]


async def test_a_put_dropped_before_arm_ran_it_is_sent_again_once_a_get_shows_no_pool(
        fake_arm: FakeARM, make_provisioner: MakeProvisioner) -> None:
    """A broken connection says nothing about whether ARM ran the PUT: a GET decides; absent, the PUT is sent
    again (and a throttled PUT, which ARM did not run, is retried by the SDK after Retry-After)."""
    provisioner = await make_provisioner()
    fake_arm.inject(1, drop=True, method="PUT", route="agentPool")
    fake_arm.inject(1, 429, method="PUT", route="agentPool", retry_after="1")
    ref = await provisioner.create(gpu_machine("drop-0"))
    assert ref.ready
    assert list(fake_arm.pools) == [pool_name("drop-0")]
    puts = [(key, status) for _, key, status in fake_arm.log if key in ("PUT agentPool", "GET agentPool")]
    assert puts[:5] == [("GET agentPool", 404), ("PUT agentPool", 0), ("GET agentPool", 404),
                        ("PUT agentPool", 429), ("PUT agentPool", 201)], puts


async def test_a_slow_create_times_out_retryably_and_is_picked_up_later(
        fake_arm: FakeARM, make_provisioner: MakeProvisioner) -> None:
    fake_arm.op_seconds = 3.0
    impatient = await make_provisioner(aks_create_timeout_seconds=1.0)
    with pytest.raises(RetryableError, match="not done after 1s"):
        await impatient.create(gpu_machine("slow-0"))
    patient = await make_provisioner()
    ref = await patient.create(gpu_machine("slow-0"))
    assert ref.ready
    assert fake_arm.calls["PUT agentPool"] == 1


async def test_persistent_5xx_becomes_a_retryable_error(fake_arm: FakeARM, make_provisioner: MakeProvisioner) -> None:
    provisioner = await make_provisioner(arm_retry_total=2)
    fake_arm.inject(100, 500, route="agentPool", method="GET", code="InternalServerError", message="boom")
    with pytest.raises(RetryableError) as info:
        await provisioner.create(gpu_machine("down-0"))
    assert "500" in info.value.message
    assert fake_arm.calls["PUT agentPool"] == 0


async def test_quota_shortfall_fails_before_any_create_with_the_figures(
        fake_arm: FakeARM, make_provisioner: MakeProvisioner) -> None:
    provisioner = await make_provisioner()
    with pytest.raises(QuotaExceededError) as info:
        await provisioner.create(gpu_machine("a100-0", "Standard_NC24ads_A100_v4"))
    assert ("Standard_NC24ads_A100_v4 needs 24 vCPUs of family standardNCADSA100v4Family; "
            "quota 0 of 0 left in westus2") in info.value.message
    assert info.value.reason == "QuotaExceeded"
    assert fake_arm.calls["PUT agentPool"] == 0 and fake_arm.pools == {}

    # family has room, but the partly used family quota does not fit a second 12-vCPU node
    fake_arm.quotas["standardNCSv3Family"] = (40, 48)
    provisioner = await make_provisioner()
    with pytest.raises(QuotaExceededError) as info:
        await provisioner.create(gpu_machine("nc12-0", "Standard_NC12s_v3"))
    assert "needs 12 vCPUs of family standardNCSv3Family; quota 8 of 48 left in westus2" in info.value.message
    assert fake_arm.calls["PUT agentPool"] == 0


async def test_restricted_or_unknown_sku_fails_before_any_create(fake_arm: FakeARM,
                                                                 make_provisioner: MakeProvisioner) -> None:
    provisioner = await make_provisioner()
    with pytest.raises(InstanceTypeUnavailableError) as info:
        await provisioner.create(gpu_machine("nd-0", "Standard_ND96asr_v4"))
    assert "Standard_ND96asr_v4 is restricted for this subscription in westus2 (NotAvailableForSubscription)" \
        in info.value.message
    with pytest.raises(InstanceTypeUnavailableError) as info:
        await provisioner.create(gpu_machine("nope-0", "Standard_NX1_v9"))
    assert "Standard_NX1_v9 is not offered in westus2" in info.value.message
    assert fake_arm.calls["PUT agentPool"] == 0 and fake_arm.pools == {}
    # the SKU list was read once: the answers are cached
    assert fake_arm.calls["GET skus"] == 1


async def test_arm_errors_in_the_create_map_to_typed_errors(fake_arm: FakeARM,
                                                            make_provisioner: MakeProvisioner) -> None:
    """When the pre-check passes but ARM refuses anyway (a stale cache, a race), the ARM code is mapped."""
    provisioner = await make_provisioner()
    fake_arm.inject(1, 400, method="PUT", route="agentPool", code="SkuNotAvailable",
                    message="The requested VM size Standard_NC6s_v3 is currently not available in location westus2.")
    with pytest.raises(InstanceTypeUnavailableError, match="SkuNotAvailable"):
        await provisioner.create(gpu_machine("sku-0"))
    fake_arm.inject(1, 409, method="PUT", route="agentPool", code="OperationNotAllowed",
                    message="Preflight validation failed: exceeding approved standardNCSv3Family Cores quota.")
    with pytest.raises(QuotaExceededError, match="quota"):
        await provisioner.create(gpu_machine("sku-0"))
    fake_arm.fail_next_operation("ZonalAllocationFailed", "Allocation failed in zone 1.")
    with pytest.raises(InsufficientCapacityError, match="ZonalAllocationFailed"):
        await provisioner.create(gpu_machine("sku-0"))
    # the failed pool is there; the next attempt deletes it and says so, and the one after succeeds
    pool = pool_name("sku-0")
    assert fake_arm.pools[pool]["properties"]["provisioningState"] == "Failed"
    with pytest.raises(RetryableError, match="ZonalAllocationFailed"):
        await provisioner.create(gpu_machine("sku-0"))
    assert pool not in fake_arm.pools
    ref = await provisioner.create(gpu_machine("sku-0"))
    assert ref.ready and fake_arm.pools[pool]["properties"]["provisioningState"] == "Succeeded"


async def test_restart_mid_create_does_not_make_a_second_pool(fake_arm: FakeARM,
                                                              make_provisioner: MakeProvisioner) -> None:
    fake_arm.op_seconds = 3.0
    first = await make_provisioner()
    machine = gpu_machine("restart-0")
    task = asyncio.create_task(first.create(machine))
    await fake_arm.wait_for_call("GET operation")  # the PUT was accepted; the SDK is polling the LRO
    task.cancel()  # the controller dies while the LRO is in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.close()
    assert fake_arm.pools[pool_name("restart-0")]["properties"]["provisioningState"] == "Creating"

    second = await make_provisioner()  # a new process: nothing in memory
    ref = await second.create(machine)
    assert ref.ready
    assert fake_arm.calls["PUT agentPool"] == 1
    assert list(fake_arm.pools) == [pool_name("restart-0")]


async def test_two_controllers_racing_make_one_pool(fake_arm: FakeARM, make_provisioner: MakeProvisioner) -> None:
    """Two instances create the same Machine at once: an "operation in progress" 409 counts as creating."""
    fake_arm.op_seconds = 2.0
    one, two = await make_provisioner(), await make_provisioner()
    machine = gpu_machine("race-0")
    a, b = await asyncio.gather(one.create(machine), two.create(machine))
    assert a == b and a.ready
    assert list(fake_arm.pools) == [pool_name("race-0")]


async def test_operation_in_progress_answer_is_treated_as_creating(fake_arm: FakeARM,
                                                                   make_provisioner: MakeProvisioner) -> None:
    fake_arm.op_seconds = 2.0
    provisioner = await make_provisioner()
    fake_arm.add_pool(pool_name("busy-0"), state="Creating", node_labels={"kaito.sh/machine": "busy-0"})
    # the GET misses it (e.g. a replica lagging), the PUT is refused as in progress; then it finishes
    fake_arm.inject(1, 404, method="GET", route="agentPool", code="NotFound", message="not found")

    async def finish() -> None:
        await asyncio.sleep(1.5)
        fake_arm.pools[pool_name("busy-0")]["properties"]["provisioningState"] = "Succeeded"

    finisher = asyncio.create_task(finish())
    ref = await provisioner.create(gpu_machine("busy-0"))
    await finisher
    assert ref.ready
    assert fake_arm.calls["PUT agentPool"] == 1
    assert len(fake_arm.pools) == 1


async def test_loaded_by_name_with_workload_identity_from_the_environment(
        fake_arm: FakeARM, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What `kaito controller --provisioner aks` does: entry point, settings and credential from the environment,
    the federated token exchanged at the (fake) Entra ID token endpoint, then ARM called with that token."""
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")  # the projected service-account token
    env = {
        "ARM_SUBSCRIPTION_ID": fake_arm.subscription, "ARM_RESOURCE_GROUP": fake_arm.resource_group,
        "AZURE_CLUSTER_NAME": fake_arm.cluster, "LOCATION": fake_arm.location,
        "ARM_BASE_URL": fake_arm.base_url, "ARM_CA_BUNDLE": str(fake_arm.ca_path),
        "AZURE_AUTHORITY_HOST": fake_arm.base_url, "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
        "AZURE_TENANT_ID": "tenant-1", "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "AKS_POLL_INTERVAL_SECONDS": "0.5",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    provisioner = load_provisioner("aks")
    assert isinstance(provisioner, AKSProvisioner)
    await provisioner.start(ProvisionerContext(client=None, logger=structlog.get_logger("aks-test")))
    try:
        ref = await provisioner.create(gpu_machine("wi-0"))
        assert ref.ready
    finally:
        await provisioner.close()
    assert fake_arm.calls["POST token"] == 1  # one token, cached for the rest
    assert set(fake_arm.authorizations) == {"fake-token-1"}


async def test_instance_types_report_the_regions_gpu_sizes(fake_arm: FakeARM,
                                                           make_provisioner: MakeProvisioner) -> None:
    provisioner = await make_provisioner()
    types = {t.name: t for t in await provisioner.instance_types()}
    assert "Standard_D4s_v3" not in types  # no GPUs
    assert types["Standard_NC12s_v3"].gpu_count == 2 and types["Standard_NC12s_v3"].available
    assert not types["Standard_ND96asr_v4"].available
    assert types["Standard_ND96asr_v4"].reason == "NotAvailableForSubscription"


async def test_without_waiting_create_returns_at_once_and_reports_progress(
        fake_arm: FakeARM, make_provisioner: MakeProvisioner) -> None:
    """AKS_WAIT_FOR_CREATE=false: no worker held for minutes; the reconciler's next calls pick up the pool."""
    fake_arm.op_seconds = 2.0
    provisioner = await make_provisioner(aks_wait_for_create=False)
    machine = gpu_machine("nowait-0")
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = await provisioner.create(machine)
    assert loop.time() - started < 1.0
    assert first.provider_id == "" and not first.ready
    assert "is Creating" in first.message and pool_name("nowait-0") in first.message
    second = await provisioner.create(machine)
    assert second.provider_id == "" and "is Creating" in second.message
    await fake_arm.wait_idle()
    done = await provisioner.create(machine)
    assert done.ready
    assert fake_arm.calls["PUT agentPool"] == 1
    assert fake_arm.calls["GET operation"] == 0  # nothing polled the LRO: the reconciler's calls are the polls
