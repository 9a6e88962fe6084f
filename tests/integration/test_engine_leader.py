"""Leader election between real processes: one leader reconciles; kill -9 it and the standby takes over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from engine_support import WIDGET, eventually, install_widget_crd, make_settings, widget

from kaito_core.engine import (
    LEASE,
    Client,
    Controller,
    LeaderElectionLostError,
    LeaderElectionSettings,
    Manager,
    Request,
    Result,
)
from kaito_core.testing import ControlPlane

HERE = Path(__file__).parent
NS = "default"
LEASE_NAME = "engine-test-leader"

CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from engine_support import make_settings, sample_controller
    from kaito_core.engine import LeaderElectionLostError, LeaderElectionSettings, Manager

    kubeconfig, identity, out = sys.argv[1:4]

    async def main() -> int:
        settings = make_settings("default", handle_signals=True, leader_election=LeaderElectionSettings(
            enabled=True, lease_name="engine-test-leader", lease_namespace="default", identity=identity))
        manager = await Manager.from_kubeconfig(kubeconfig, settings)
        sink = open(out, "a", buffering=1)

        def record(key, start, end):
            sink.write(json.dumps({"who": identity, "key": key, "start": start, "end": end}) + "\\n")

        sample_controller(manager, workers=2, work_time=0.05, requeue_after=0.2, on_interval=record)
        try:
            await manager.run()
        except LeaderElectionLostError:
            return 1
        finally:
            await manager.client.close()
        return 0

    sys.exit(asyncio.run(main()))
""")


def alive(proc: asyncio.subprocess.Process, tmp: Path, identity: str) -> bool:
    """Fail at once, with its log, if a child manager died."""
    if proc.returncode is not None:
        raise AssertionError(f"{identity} exited {proc.returncode}:\n"
                             + (tmp / f"{identity}.log").read_text()[-3000:])
    return True


def intervals(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def spawn(plane: ControlPlane, tmp: Path, identity: str) -> asyncio.subprocess.Process:
    script = tmp / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    log = open(tmp / f"{identity}.log", "wb")  # noqa: SIM115, ASYNC230 - the child writes it until it ends
    return await asyncio.create_subprocess_exec(sys.executable, str(script), str(plane.kubeconfig), identity,
                                                str(tmp / f"{identity}.jsonl"), env=env, stdout=log,
                                                stderr=log)


async def lease_holder(client: Client) -> str | None:
    lease = await client.get_or_none(LEASE, LEASE_NAME, NS)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


async def test_two_managers_one_leader_and_takeover(light_control_plane: ControlPlane, tmp_path: Path) -> None:
    plane = light_control_plane
    manager = await Manager.from_kubeconfig(plane.kubeconfig, make_settings(NS))
    client = manager.client
    await install_widget_crd(client)
    for i in range(10):
        await client.create(widget(f"l{i}", NS, str(i)))
    a_out, b_out = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a = await spawn(plane, tmp_path, "a")
    b: asyncio.subprocess.Process | None = None
    try:
        await eventually(lambda: alive(a, tmp_path, "a") and len(intervals(a_out)) > 0, 60, message="a reconciles")
        b = await spawn(plane, tmp_path, "b")
        # b starts, syncs its cache, and must stay a standby while a renews.
        await asyncio.sleep(8)
        alive(a, tmp_path, "a")
        alive(b, tmp_path, "b")
        assert intervals(b_out) == [], "the standby reconciled while the leader was alive"
        assert await lease_holder(client) == "a"
        before = len(intervals(a_out))
        await asyncio.sleep(1)
        assert len(intervals(a_out)) > before, "the leader stopped reconciling"

        a.send_signal(signal.SIGKILL)  # no lease release: b must wait the lease out
        killed_at = time.time()
        await a.wait()
        await eventually(lambda: len(intervals(b_out)) > 0, 25, message="b takes over")
        takeover = min(i["start"] for i in intervals(b_out)) - killed_at
        assert takeover < 20, f"takeover took {takeover:.1f}s"
        assert await lease_holder(client) == "b"

        # No key was ever reconciled by both at once.
        a_iv, b_iv = intervals(a_out), intervals(b_out)
        for x in a_iv:
            for y in b_iv:
                if x["key"] == y["key"]:
                    assert x["end"] <= y["start"] or y["end"] <= x["start"], (x, y)
        assert max(i["end"] for i in a_iv) <= min(i["start"] for i in b_iv)

        # SIGTERM: clean stop, exit 0, and the lease is handed back.
        b.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(b.wait(), 30) == 0
        assert not await lease_holder(client)
        print(f"takeover after kill -9: {takeover:.1f}s")
    finally:
        for proc in (a, b):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        await client.close()


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    async def reconcile(self, request: Request) -> Result:
        self.calls += 1
        return Result(requeue_after=0.2)


async def test_losing_the_lease_stops_controllers_and_raises(light_control_plane: ControlPlane) -> None:
    plane = light_control_plane
    settings = make_settings(NS, leader_election=LeaderElectionSettings(
        enabled=True, lease_name="steal-me", lease_namespace=NS, identity="victim",
        lease_duration=6, renew_deadline=4, retry_period=1))
    manager = await Manager.from_kubeconfig(plane.kubeconfig, settings)
    client = manager.client
    await install_widget_crd(client)
    await client.create(widget("x", NS, "1"))
    counting = Counting()
    manager.add(Controller.for_(WIDGET).build(counting))
    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: counting.calls > 0, 30, message="leader reconciles")
        assert manager.is_leader
        # Someone else takes the lease (as after a long pause of ours).
        lease = await client.get(LEASE, "steal-me", NS)
        lease["spec"]["holderIdentity"] = "thief"
        lease["spec"]["leaseDurationSeconds"] = 3600
        await client.update(lease, kind=LEASE)
        try:
            await asyncio.wait_for(task, 10)
            raise AssertionError("run() returned instead of raising")
        except LeaderElectionLostError:
            pass
        calls = counting.calls
        await asyncio.sleep(1)
        assert counting.calls == calls, "controllers kept running after leadership was lost"
        assert all(not c.running for c in manager.controllers)
    finally:
        if not task.done():
            task.cancel()
        await client.close()
