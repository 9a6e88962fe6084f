"""The apiserver goes away mid-run and etcd is compacted under a frozen operator: no update is lost.

1. Workspaces are created; while they come up kube-apiserver is stopped for a few seconds and
   started again (every watch and request breaks). All become Ready.
2. The operator is frozen (SIGSTOP). Meanwhile Workspaces are scaled from 1 to 2 nodes, others
   deleted, new ones created; then etcd is compacted and the apiserver restarted, so the operator's
   watches come back with expired resourceVersions (410 Gone) and must re-list. Unfrozen, it must
   act on every change it did not see: the scaled ones end with 2 Machines and Ready, the deleted
   ones leave nothing behind, the new ones are Ready.

Sizes: KAITO_RELIABILITY_APISERVER_WORKSPACES (24).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from reliability_support import (
    Fleet,
    OperatorProcess,
    ReliabilityRow,
    env_int,
    eventually,
    objects_left,
    operator_kubeconfig,
    ready_now,
    record,
    workspace_doc,
)

from kaito_core.api import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from kaito_core.controllers.workspace import MACHINE, WORKSPACE
from kaito_core.testing import ControlPlane

pytestmark = pytest.mark.reliability

WORKSPACES = env_int("APISERVER_WORKSPACES", 24)
NS = "apiserver-chaos"


async def test_apiserver_restart_and_etcd_compaction_lose_no_update(private_plane: ControlPlane, fleet: Fleet,
                                                                    tmp_path: Path) -> None:
    row = record(ReliabilityRow("apiserver restart + etcd compaction"))
    private_plane.kubectl("create", "namespace", NS)
    await fleet.start([NS])
    kubeconfig, _ = operator_kubeconfig(private_plane, tmp_path)
    op = OperatorProcess(kubeconfig, tmp_path, identity="apiserver", provisioner_settings={"launch_delay": 0.5})
    names = [f"ws-{i:03d}" for i in range(WORKSPACES)]
    op.start()
    try:
        await eventually(op.ready, 90, message="operator /readyz", describe=op.tail)
        # -- 1: the apiserver restarts while the Workspaces come up
        await fleet.create_workspaces([workspace_doc(n, NS) for n in names])
        await asyncio.sleep(1.0)
        await asyncio.to_thread(private_plane.restart_apiserver, downtime=3.0)
        row.faults_injected += 1
        started = time.monotonic()
        await eventually(lambda: fleet.ready_count() == WORKSPACES, 180, message="all Ready after the restart",
                         describe=lambda: str(fleet.not_ready()))
        converge_1 = time.monotonic() - started
        assert op.alive(), op.tail()

        # -- 2: changes the operator cannot see (frozen), then compaction and another restart
        third = max(1, WORKSPACES // 3)
        scaled, deleted = names[:third], names[third:2 * third]
        added = [f"new-{i:03d}" for i in range(third)]
        os.kill(op.pid, signal.SIGSTOP)
        try:
            for name in scaled:
                await fleet.client.patch(WORKSPACE, name, {"resource": {"count": 2}}, NS)
            for name in deleted:
                await fleet.client.delete(WORKSPACE, name, NS)
            await fleet.create_workspaces([workspace_doc(n, NS) for n in added])
            # Churn so the operator's last resourceVersion falls well behind, then expire it.
            for i in range(20):
                await fleet.client.patch(WORKSPACE, names[-1], {"metadata": {"annotations": {"churn": str(i)}}}, NS)
            revision = await asyncio.to_thread(private_plane.compact_etcd)
            await asyncio.to_thread(private_plane.restart_apiserver, downtime=1.0)
            row.faults_injected += 2
        finally:
            os.kill(op.pid, signal.SIGCONT)
        started = time.monotonic()
        expected = {f"{NS}/{n}": 2 if n in scaled else 1 for n in names if n not in deleted}
        expected |= {f"{NS}/{n}": 1 for n in added}

        async def converged() -> bool:
            items = {f"{NS}/{w['metadata']['name']}": w for w in fleet.objects("workspaces")}
            if set(items) != set(expected) or not all(ready_now(w) for w in items.values()):
                return False
            machines = (await fleet.client.list(MACHINE, label_selector={LABEL_WORKSPACE_NAMESPACE: NS})).items
            per_ws: dict[str, int] = {}
            for m in machines:
                key = f"{NS}/{m['metadata']['labels'][LABEL_WORKSPACE]}"
                per_ws[key] = per_ws.get(key, 0) + 1
            return per_ws == expected and all(
                len((w.get("status") or {}).get("workerNodes") or []) == expected[k] for k, w in items.items())

        await eventually(converged, 180, message=f"every change made while frozen acted on (compacted at "
                         f"revision {revision})", describe=lambda: f"{fleet.counts()} {fleet.not_ready()}")
        converge_2 = time.monotonic() - started
        assert op.alive(), op.tail()
        assert op.starts == 1, "the operator restarted instead of recovering its watches"
        dup = fleet.duplicates(expected)
        row.duplicates = len(dup)
        assert not dup, dup
        row.objects_created = len(fleet.machine_uids) + len(fleet.node_uids) + len(fleet.created_at)
        # -- and everything goes
        await fleet.delete_workspaces()
        started = time.monotonic()
        try:
            await eventually(lambda: not any(fleet.counts()[k] for k in ("workspaces", "machines", "nodes")), 120,
                             message="nothing left", describe=lambda: str(fleet.leftovers()))
        finally:
            # Listed afresh from the apiserver, whether or not the wait on the informers succeeded.
            row.objects_left = await objects_left(fleet.client, [NS])
        row.max_convergence_s = max(converge_1, converge_2, time.monotonic() - started)
        assert row.objects_left == 0, f"{row.objects_left} objects left after the delete"
        row.passed = True
        print(f"apiserver: converged {converge_1:.1f}s after the restart, {converge_2:.1f}s after compaction")
    finally:
        op.stop()
