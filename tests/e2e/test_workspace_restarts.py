"""Kill and restart the controller at random moments while 20 Workspaces come up: all reach
Ready and exactly ``count`` Machines exist per Workspace (none was ever made twice).

The controller runs in a child process and a kill is a real SIGKILL: no ``finally``, no
cancellation handler, no connection closed politely (``task.cancel()`` ran all of those)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from workspace_support import delete_all_workspaces, eventually, is_true

from kaito_core.api.crd import all_crds
from kaito_core.controllers.workspace import MACHINE, WORKSPACE
from kaito_core.engine import DEPLOYMENT, ApiClientTransport, Client
from kaito_core.testing import Cluster, install_crds

pytestmark = pytest.mark.e2e

N = 20
ROUNDS = 6


def workspace(name: str, namespace: str, count: int) -> dict[str, Any]:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": name, "namespace": namespace},
            "resource": {"count": count, "instanceType": "Standard_NC6s_v3",
                         "labelSelector": {"matchLabels": {"apps": name}}},
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}


class MachineRecorder:
    """Remembers every Machine name it ever saw per Workspace of ``namespace`` (polled every 0.3 s)."""

    def __init__(self, client: Client, namespace: str):
        self.client = client
        self.namespace = namespace
        self.seen: dict[str, set[str]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a dropped connection: look again next round
                for machine in (await self.client.list(MACHINE, label_selector={
                        "kaito.sh/workspacenamespace": self.namespace})).items:
                    self.seen[machine["metadata"]["labels"]["kaito.sh/workspace"]].add(machine["metadata"]["name"])
            await asyncio.sleep(0.3)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


CHILD = """
import asyncio, sys, types
from workspace_support import new_manager
from kaito_core.controllers.workspace import WorkspaceSettings

kubeconfig, namespace = sys.argv[1], sys.argv[2]

async def main() -> None:
    manager = await new_manager(types.SimpleNamespace(kubeconfig=kubeconfig), namespace,
                                WorkspaceSettings(requeue_seconds=3, workers=4))
    await manager.run()

asyncio.run(main())
"""


def start_controller(cluster: Cluster, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    """The Workspace (and Machine) controller of new_manager() in a child process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-c", CHILD, str(cluster.kubeconfig), namespace],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL, wherever it is."""
    assert proc.poll() is None, f"the controller exited by itself ({proc.returncode})"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


async def test_random_restarts_converge_without_duplicate_machines(kube_cluster: Cluster, kube_namespace: str,
                                                                   tmp_path: Path) -> None:
    ns = kube_namespace
    seed = int(os.environ.get("KAITO_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    client = Client(await ApiClientTransport.from_kubeconfig(kube_cluster.kubeconfig))
    await install_crds(client, all_crds())
    recorder = MachineRecorder(client, ns)
    recorder.start()
    counts = {f"chaos-{i:02d}": 2 if i % 5 == 0 else 1 for i in range(N)}
    log = tmp_path / "controller.log"
    final: subprocess.Popen[bytes] | None = None
    try:
        proc = start_controller(kube_cluster, ns, log)
        await asyncio.gather(*(client.create(workspace(name, ns, count), kind=WORKSPACE)
                               for name, count in counts.items()))
        for _ in range(ROUNDS):
            await asyncio.sleep(rng.uniform(1.0, 4.0))  # a child takes ~1 s to import and start
            kill(proc)
            proc = start_controller(kube_cluster, ns, log)
        final = proc

        async def all_ready() -> bool:
            items = (await client.list(WORKSPACE, ns)).items
            return len(items) == N and all(is_true(ws, "WorkspaceReady") for ws in items)

        try:
            await eventually(all_ready, 240, interval=1, message=f"all {N} Workspaces Ready (seed {seed})")
        except AssertionError:
            items = (await client.list(WORKSPACE, ns)).items
            stuck = {ws["metadata"]["name"]: (ws.get("status") or {}).get("conditions") for ws in items
                     if not is_true(ws, "WorkspaceReady")}
            raise AssertionError(f"seed {seed}: not Ready: {stuck}\n{log.read_text()[-3000:]}") from None

        machines: dict[str, list[str]] = defaultdict(list)
        for machine in (await client.list(MACHINE, label_selector={"kaito.sh/workspacenamespace": ns})).items:
            machines[machine["metadata"]["labels"]["kaito.sh/workspace"]].append(machine["metadata"]["name"])
        for name, count in counts.items():
            assert len(machines[name]) == count, (seed, name, machines[name])
            assert len(recorder.seen[name]) == count, (seed, name, "a Machine was created twice",
                                                       recorder.seen[name])
            deployment = await client.get(DEPLOYMENT, name, ns)
            assert deployment["spec"]["replicas"] == count
            assert deployment["status"].get("readyReplicas") == count
    finally:
        if final is not None:
            with contextlib.suppress(Exception):
                await delete_all_workspaces(client, ns, timeout=90)
            with contextlib.suppress(Exception):
                kill(final)
        await recorder.stop()
        await client.close()
