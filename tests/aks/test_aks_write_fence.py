"""A leader paused past its lease and resumed creates or deletes no agent pool: the plugin's ARM
writes ask the leader's write fence (ProvisionerContext.write_fence) before the attempt and again
as the bytes leave; reads still go. Against the fake ARM (real HTTP on loopback)."""

from __future__ import annotations

import pytest
import structlog
from aks_support import MakeProvisioner, gpu_machine
from fake_arm import FakeARM
from kaito_provisioner_aks import pool_name

from kaito_core.engine import LeaderElectionLostError
from kaito_core.provisioning import ProvisionerContext


class Fence:
    """Refuses from the ``refuse_from``-th call on (1: every write; 2: the early check passes and
    the check as the bytes leave refuses, a stop between the two)."""

    def __init__(self, refuse_from: int | None) -> None:
        self.refuse_from = refuse_from
        self.calls: list[tuple[str, str]] = []

    def __call__(self, method: str, path: str) -> None:
        self.calls.append((method, path))
        if self.refuse_from is not None and len(self.calls) >= self.refuse_from:
            raise LeaderElectionLostError(f"not sending {method} {path}")


async def _started(make_provisioner: MakeProvisioner, fence: Fence):  # type: ignore[no-untyped-def]
    provisioner = await make_provisioner(start=False)
    await provisioner.start(ProvisionerContext(client=None, logger=structlog.get_logger("aks-fence"),
                                               write_fence=fence))
    return provisioner


@pytest.mark.parametrize("refuse_from", [1, 2], ids=["before-the-attempt", "as-the-bytes-leave"])
async def test_a_fenced_leader_sends_no_put(fake_arm: FakeARM, make_provisioner: MakeProvisioner,
                                            refuse_from: int) -> None:
    fence = Fence(refuse_from)
    provisioner = await _started(make_provisioner, fence)
    with pytest.raises(LeaderElectionLostError, match="not sending PUT"):
        await provisioner.create(gpu_machine("fenced-0"))
    assert fake_arm.calls["PUT agentPool"] == 0, fake_arm.calls
    assert fake_arm.calls["GET agentPool"] >= 1  # reads still went: the pool was looked up first
    assert [m for m, _ in fence.calls] == ["PUT"] * len(fence.calls)
    assert pool_name("fenced-0") not in fake_arm.pools


async def test_a_fenced_leader_deletes_no_pool(fake_arm: FakeARM, make_provisioner: MakeProvisioner) -> None:
    fake_arm.add_pool(pool_name("kept-0"), node_labels={"kaito.sh/machine": "kept-0"})
    provisioner = await _started(make_provisioner, Fence(1))
    with pytest.raises(LeaderElectionLostError, match="not sending DELETE"):
        await provisioner.delete(gpu_machine("kept-0"))
    assert fake_arm.calls["DELETE agentPool"] == 0
    assert pool_name("kept-0") in fake_arm.pools


async def test_an_unfenced_leader_writes(fake_arm: FakeARM, make_provisioner: MakeProvisioner) -> None:
    fence = Fence(None)
    provisioner = await _started(make_provisioner, fence)
    await provisioner.create(gpu_machine("free-0"))
    assert fake_arm.calls["PUT agentPool"] == 1
    assert fence.calls[0][0] == "PUT" and fence.calls[0][1].endswith(f"/agentPools/{pool_name('free-0')}")
    assert len([c for c in fence.calls if c[0] == "PUT"]) >= 2  # before the attempt, and as its bytes left
