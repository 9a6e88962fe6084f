"""Leader failover: two operator processes with Lease election; the leader is killed (-9) again and
again (and restarted) while Workspaces come up. Another process takes over within 20 s every time (the
standby, or the killed slot's restarted process when it wins the race for the expired lease), and at
no moment do two act. Then a leader is paused (SIGSTOP) with node launches in flight until the standby has taken
over, and resumed (SIGCONT): it must not write anything once it runs again, only step down and exit.

"Acting" is measured from the outside: each process runs as its own ServiceAccount, so the
apiserver's audit log attributes every write (create/update/patch/delete of anything but the Lease)
to one of them, with the time the apiserver received it. Each process's log says when it became
leader; the test knows when it killed one. Every write must fall inside a leadership term of the
process that made it, and the terms must not overlap. Client-go's default timings (lease 15 s,
renew 10 s, retry 2 s). Sizes: KAITO_RELIABILITY_LEADER_KILLS (10),
KAITO_RELIABILITY_LEADER_WORKSPACES_PER_ROUND (2).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import time
from pathlib import Path

import pytest
from reliability_support import (
    Fleet,
    OperatorProcess,
    ReliabilityRow,
    audit_time,
    audited_writes,
    env_int,
    eventually,
    objects_left,
    operator_kubeconfig,
    record,
    workspace_doc,
)

from kaito_core.engine import LEASE
from kaito_core.testing import ControlPlane

pytestmark = pytest.mark.reliability

KILLS = env_int("LEADER_KILLS", 10)
PER_ROUND = env_int("LEADER_WORKSPACES_PER_ROUND", 2)
TAKEOVER_LIMIT = 20.0
SLACK = 1.0  # seconds: audit (apiserver receive time) vs. log clocks, and requests in flight at the kill
NS = "leader-chaos"


def _terms(op: OperatorProcess, kills: list[float], end: float) -> list[tuple[float, float]]:
    """[(became leader, stopped being leader)] of one slot, from its log and the kill times."""
    terms: list[tuple[float, float]] = []
    start: float | None = None
    for line in op.log_lines():
        if line.get("harness") == "start" and start is not None:
            # The previous process of this slot died as leader: its term ended at the kill before this start.
            ended = max((k for k in kills if k <= float(line["t"])), default=float(line["t"]))
            terms.append((start, ended))
            start = None
        if line.get("event") == "leadership changed":
            if line.get("leader") is True:
                start = audit_time(line["timestamp"])
            elif start is not None:
                terms.append((start, audit_time(line["timestamp"])))
                start = None
    if start is not None:
        terms.append((start, end))
    return terms


def _writes(plane: ControlPlane, user: str) -> list[tuple[float, str]]:
    out = []
    for when, event in audited_writes(plane, user):
        ref = event.get("objectRef") or {}
        code = (event.get("responseStatus") or {}).get("code")
        out.append((when, f"{event['verb']} {ref.get('resource')}/{ref.get('name')} -> {code}"))
    return out


async def test_killing_the_leader_hands_over_within_20s_and_never_two_act(
        private_plane: ControlPlane, fleet: Fleet, tmp_path: Path) -> None:
    seed = int(os.environ.get("KAITO_RELIABILITY_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    row = record(ReliabilityRow("leader failover (2 replicas, kill leader)", notes=f"seed {seed}"))
    private_plane.kubectl("create", "namespace", NS)
    await fleet.start([NS])
    ops: dict[str, OperatorProcess] = {}
    users: dict[str, str] = {}
    for slot in ("slot-a", "slot-b"):
        kubeconfig, users[slot] = operator_kubeconfig(private_plane, tmp_path, account=f"op-{slot}")
        ops[slot] = OperatorProcess(kubeconfig, tmp_path, identity=slot, leader_elect=True)
        ops[slot].start()
    kills: list[float] = []
    takeovers: list[float] = []
    created = 0

    async def holder() -> str:
        lease = await fleet.client.get_or_none(LEASE, "kaito-core-leader", "kaito-system")
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    try:
        await eventually(lambda: all(op.ready() for op in ops.values()), 90, message="both replicas ready")
        await eventually(holder, 60, message="a leader")
        for round_ in range(KILLS):
            leader_identity = await holder()
            slot = leader_identity.split("_")[0]
            standby = "slot-b" if slot == "slot-a" else "slot-a"
            await eventually(ops[standby].ready, 90, message=f"standby {standby} ready",
                             describe=ops[standby].tail)
            await fleet.create_workspaces([workspace_doc(f"ws-{created + i:03d}", NS) for i in range(PER_ROUND)])
            created += PER_ROUND
            await asyncio.sleep(rng.uniform(0.3, 3.0))
            assert ops[slot].alive(), ops[slot].tail()
            kills.append(time.time())
            ops[slot].kill9()
            ops[slot].start()
            t_kill = time.monotonic()

            seen: list[str] = []

            async def taken_over(leader: str = leader_identity, seen: list[str] = seen) -> bool:
                # Any other process counts: usually the standby, but the killed slot's restarted process
                # races for the same expired lease and wins when it first saw the lease before the
                # standby saw its last renewal (a fast start), exactly as a restarted pod would.
                now = await holder()
                seen[:] = [now]
                return bool(now) and now != leader

            def waiting(seen: list[str] = seen, other: str = standby) -> str:
                return f"holder {seen}; {other}: {ops[other].tail()[-400:]}"

            await eventually(taken_over, 60, interval=0.2, message=f"round {round_}: a replica takes over",
                             describe=waiting)
            takeovers.append(time.monotonic() - t_kill)
            row.kills_survived += 1
        started = time.monotonic()
        await eventually(lambda: fleet.ready_count() == created, 180, message=f"all {created} Ready",
                         describe=lambda: str(fleet.not_ready()))
        converge = time.monotonic() - started
        await fleet.delete_workspaces()
        try:
            await eventually(lambda: not any(fleet.counts()[k] for k in ("workspaces", "machines", "nodes")), 120,
                             message="nothing left", describe=lambda: str(fleet.leftovers()))
        finally:
            # Listed afresh from the apiserver, whether or not the wait on the informers succeeded.
            row.objects_left = await objects_left(fleet.client, [NS])
        row.max_convergence_s = max(converge, *takeovers)
        row.objects_created = len(fleet.machine_uids) + len(fleet.node_uids) + created
        assert row.objects_left == 0, f"seed {seed}: {row.objects_left} objects left after the delete"
        dup = fleet.duplicates({})
        row.duplicates = len(dup)
        assert not dup, f"seed {seed}: {dup}"
    finally:
        for op in ops.values():
            op.stop()
    end = time.time()

    # -- who acted when
    terms = {slot: _terms(op, kills, end) for slot, op in ops.items()}
    # Log-based takeover: from the kill to the moment the other process logged "became leader".
    all_terms = sorted((start, stop, slot) for slot, ts in terms.items() for start, stop in ts)
    for (_s1, e1, a), (s2, _e2, b) in itertools.pairwise(all_terms):
        assert s2 >= e1, f"seed {seed}: {b} became leader at {s2:.3f} while {a} led until {e1:.3f}"
    log_takeovers = []
    for kill in kills:
        nxt = min((s for s, _, _ in all_terms if s > kill), default=None)
        assert nxt is not None, f"seed {seed}: nobody became leader after the kill at {kill:.3f}"
        log_takeovers.append(nxt - kill)
    stray: list[str] = []
    writes = 0
    for slot, user in users.items():
        for when, what in _writes(private_plane, user):
            writes += 1
            if not any(start - SLACK <= when <= stop + SLACK for start, stop in terms[slot]):
                stray.append(f"{slot} at {when:.3f}: {what}")
    assert writes > 0, "no audited writes: is the audit log on?"
    assert not stray, f"seed {seed}: writes by a replica that was not the leader:\n" + "\n".join(stray[:20])
    print(f"leader: takeovers (lease watch) {[round(t, 1) for t in takeovers]}; "
          f"(logs) {[round(t, 1) for t in log_takeovers]}; {writes} writes all inside their leader's term")
    assert max(log_takeovers) < TAKEOVER_LIMIT, f"seed {seed}: takeover took {max(log_takeovers):.1f}s"
    assert len(kills) == KILLS
    row.max_convergence_s = max(row.max_convergence_s, *log_takeovers)
    row.notes += f"; takeover max {max(log_takeovers):.1f}s mean {sum(log_takeovers) / len(log_takeovers):.1f}s"
    row.passed = True



PAUSED_NS = "leader-paused"
PAUSE_WORKSPACES = env_int("LEADER_PAUSE_WORKSPACES", 8)


async def test_a_leader_paused_past_its_lease_writes_nothing_when_it_resumes(
        private_plane: ControlPlane, fleet: Fleet, tmp_path: Path) -> None:
    """SIGSTOP the leader while its node launches sleep (3 s launch delay), keep it stopped until the standby
    holds the lease and has acted, SIGCONT it: from the audit log, no write of the resumed process (anything
    but its Lease) reaches the apiserver after it was stopped, and it exits (leadership lost)."""
    row = record(ReliabilityRow("leader paused (SIGSTOP) past its lease, then resumed"))
    private_plane.kubectl("create", "namespace", PAUSED_NS)
    await fleet.start([PAUSED_NS])
    ops: dict[str, OperatorProcess] = {}
    users: dict[str, str] = {}
    for slot in ("pause-a", "pause-b"):
        kubeconfig, users[slot] = operator_kubeconfig(private_plane, tmp_path, account=f"op-{slot}")
        ops[slot] = OperatorProcess(kubeconfig, tmp_path, identity=slot, leader_elect=True,
                                    provisioner_settings={"launch_delay": 2.0})
        ops[slot].start()

    async def holder() -> str:
        lease = await fleet.client.get_or_none(LEASE, "kaito-core-leader", "kaito-system")
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    stray: list[str] = []
    try:
        await eventually(lambda: all(op.ready() for op in ops.values()), 90, message="both replicas ready")

        async def ours() -> bool:
            return (await holder()).startswith("pause-")

        await eventually(ours, 60, message="a leader among the paused-test replicas")
        slot = (await holder()).split("_")[0]
        standby = "pause-b" if slot == "pause-a" else "pause-a"
        paused = ops[slot]
        await fleet.create_workspaces([workspace_doc(f"p-{i:02d}", PAUSED_NS) for i in range(PAUSE_WORKSPACES)])

        async def launching() -> bool:  # Machines exist: their node launches are sleeping in the leader
            return fleet.counts()["machines"] >= PAUSE_WORKSPACES

        await eventually(launching, 60, interval=0.05, message="Machines created by the leader")
        stopped_at = time.time()
        os.kill(paused.pid, signal.SIGSTOP)
        row.faults_injected += 1
        try:
            async def taken_over() -> bool:
                return (await holder()).startswith(standby)

            await eventually(taken_over, 60, interval=0.2, message=f"{standby} takes over")
            takeover = time.time() - stopped_at
            # Let the new leader act on the in-flight Workspaces while the old one is still stopped.
            await eventually(lambda: fleet.ready_count() == PAUSE_WORKSPACES, 120, message="all Ready under the "
                             "new leader", describe=lambda: str(fleet.not_ready()))
        finally:
            resumed_at = time.time()
            os.kill(paused.pid, signal.SIGCONT)
        row.max_convergence_s = takeover
        await eventually(lambda: not paused.alive(), 60, interval=0.2,
                         message="the resumed leader steps down and exits", describe=paused.tail)
        exited = time.time() - resumed_at
        await asyncio.sleep(2.0)  # anything it sent on the way out reaches the audit log
        writes = _writes(private_plane, users[slot])
        # Received after the stop (plus slack for a request already on the wire): sent after the resume.
        stray = [f"{when - resumed_at:+.2f}s after resume: {what}" for when, what in writes
                 if when > stopped_at + SLACK]
        row.duplicates = len(fleet.duplicates({})) + len(stray)
        fenced = sum("not sending" in str(line.get("error", "")) for line in paused.log_lines())
        row.notes = (f"stopped {resumed_at - stopped_at:.1f}s; takeover {takeover:.1f}s; exited {exited:.1f}s "
                     f"after resume; {len(writes)} writes before the stop, {len(stray)} after; "
                     f"{fenced} refused by the write fence")
        assert any(when <= stopped_at for when, _ in writes), "the paused leader made no write at all: no test"
        assert not stray, "the resumed leader wrote after losing its lease:\n" + "\n".join(stray[:20])
        await fleet.delete_workspaces()
        try:
            await eventually(lambda: not any(fleet.counts()[k] for k in ("workspaces", "machines", "nodes")), 120,
                             message="nothing left", describe=lambda: str(fleet.leftovers()))
        finally:
            row.objects_created = len(fleet.machine_uids) + len(fleet.node_uids) + PAUSE_WORKSPACES
            row.objects_left = await objects_left(fleet.client, [PAUSED_NS])
        assert row.objects_left == 0
        assert not fleet.duplicates({}), fleet.duplicates({})
        row.passed = True
    finally:
        for op in ops.values():
            if op.alive():
                os.kill(op.pid, signal.SIGCONT)
            op.stop()
