"""kill -9 the operator process at random points while Workspaces come up and again while they are
deleted; after the last restart everything converges (all Ready, then nothing left) with no Machine
or Node ever made twice and none leaked.

Workspaces are created (and later deleted) in waves, one wave before each kill, so every kill lands
on work in flight; the simulated provisioner takes ``launch_delay`` seconds per node like a cloud.
A kill comes at a random moment: most after the restarted process is ready (mid-reconcile), some
while it is still starting (mid cache sync). Sizes: KAITO_RELIABILITY_CRASH_WORKSPACES (50),
KAITO_RELIABILITY_CRASH_KILLS (24: half while coming up, half while deleting),
KAITO_RELIABILITY_SEED (random; printed on failure).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest
from reliability_support import (
    Fleet,
    OperatorProcess,
    ReliabilityRow,
    audited_creates,
    env_int,
    eventually,
    objects_left,
    operator_kubeconfig,
    record,
    repeated,
    workspace_doc,
)

from kaito_core.controllers.workspace import WORKSPACE
from kaito_core.testing import ControlPlane

pytestmark = pytest.mark.reliability

WORKSPACES = env_int("CRASH_WORKSPACES", 50)
KILLS = env_int("CRASH_KILLS", 24)


async def _kill_at_random(op: OperatorProcess, rng: random.Random) -> str:
    """Wait a random moment (during startup or after ready), kill -9, start again; returns when."""
    if rng.random() < 0.25:
        await asyncio.sleep(rng.uniform(0.5, 3.0))  # importing / syncing caches / first reconciles
        when = "starting"
    else:
        await eventually(op.ready, 90, interval=0.1, message="operator /readyz", describe=op.tail)
        await asyncio.sleep(rng.uniform(0.0, 2.0))
        when = "running"
    if not op.alive():
        raise AssertionError(f"the operator exited by itself:\n{op.tail()}")
    op.kill9()
    op.start()
    return when


async def test_kill_9_while_coming_up_and_while_deleting(private_plane: ControlPlane, fleet: Fleet,
                                                        tmp_path: Path) -> None:
    seed = int(os.environ.get("KAITO_RELIABILITY_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    row = record(ReliabilityRow("crash: kill -9 (simulated, 1 s launch)", notes=f"seed {seed}"))
    namespaces = ["crash-a", "crash-b"]
    for ns in namespaces:
        private_plane.kubectl("create", "namespace", ns)
    await fleet.start(namespaces)
    kubeconfig, user = operator_kubeconfig(private_plane, tmp_path)
    op = OperatorProcess(kubeconfig, tmp_path, identity="crash", provisioner_settings={"launch_delay": 1.0})
    counts = {f"{namespaces[i % 2]}/crash-{i:03d}": 2 if i % 10 == 0 else 1 for i in range(WORKSPACES)}
    docs = [workspace_doc(key.split("/")[1], key.split("/")[0], count=c) for key, c in counts.items()]
    kills_up, kills_down = KILLS // 2, KILLS - KILLS // 2
    waves = [docs[i::kills_up] for i in range(kills_up)]
    moments: list[str] = []
    op.start()
    try:
        # -- coming up: a wave of Workspaces, then a kill at a random point
        for wave in waves:
            await fleet.create_workspaces(wave)
            moments.append(await _kill_at_random(op, rng))
            row.kills_survived += 1
        started = time.monotonic()
        await eventually(lambda: fleet.ready_count() == WORKSPACES, 240, message=f"all {WORKSPACES} Ready "
                         f"after {kills_up} kills (seed {seed})", describe=lambda: str(fleet.not_ready()))
        converge_up = time.monotonic() - started
        row.max_convergence_s = converge_up
        row.objects_created = sum(fleet.counts()[k] for k in ("workspaces", "machines", "nodes", "deployments"))

        def count_duplicates() -> dict[str, object]:
            """Fleet's view (a name with a second uid, more Machines than count) and the audit log's: a Node
            POSTed twice is a second launch even when the apiserver answered AlreadyExists."""
            launches = audited_creates(private_plane, user, "nodes")
            row.provider_creates = sum(launches.values())
            dup: dict[str, object] = {**fleet.duplicates(counts),
                                      **{f"node {n} launched {k} times": k for n, k in repeated(launches).items()}}
            row.duplicates = len(dup)
            return dup

        dup = count_duplicates()
        assert not dup, f"seed {seed}: duplicates while coming up: {dup}"
        machines = fleet.counts()["machines"]
        assert machines == sum(counts.values()), f"seed {seed}: {machines} Machines, want {sum(counts.values())}"

        # -- deleting: a wave of deletions, then a kill at a random point
        keys = list(counts)
        rng.shuffle(keys)
        for i in range(kills_down):
            wave = keys[i::kills_down]
            await asyncio.gather(*(fleet.client.delete(WORKSPACE, k.split("/")[1], k.split("/")[0],
                                                       missing_ok=True) for k in wave))
            moments.append(await _kill_at_random(op, rng))
            row.kills_survived += 1
        started = time.monotonic()

        def nothing_left() -> bool:
            left = fleet.counts()
            return not (left["workspaces"] or left["machines"] or left["nodes"] or left["deployments"])

        try:
            await eventually(nothing_left, 240, message=f"nothing left after {kills_down} kills (seed {seed})",
                             describe=lambda: str(fleet.leftovers()))
        finally:
            # Listed afresh from the apiserver, whether or not the wait on the informers succeeded.
            row.objects_left = await objects_left(fleet.client, namespaces)
        converge_down = time.monotonic() - started
        row.max_convergence_s = max(converge_up, converge_down)
        dup = count_duplicates()
        assert row.objects_left == 0, f"seed {seed}: {row.objects_left} objects left"
        assert not dup, f"seed {seed}: duplicates: {dup}"
        # No Node of this run outlives its Machine (the provisioner made none behind our back).
        leaked = private_plane.kubectl("get", "nodes", "-l", "kaito.sh/machine", "-o", "name").stdout.split()
        assert leaked == [], f"seed {seed}: leaked nodes {leaked}"
        assert op.alive(), op.tail()
        row.passed = True
        row.notes += f"; kills while starting/running: {moments.count('starting')}/{moments.count('running')}"
        print(f"crash: {row.kills_survived} kills, converged up {converge_up:.1f}s, down {converge_down:.1f}s, "
              f"seed {seed}")
    finally:
        op.stop()

