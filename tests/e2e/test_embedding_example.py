"""examples/embed_operator.py works: kaito-core's reconcilers embedded beside an operator's own controller."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "examples" / "embed_operator.py"


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("embed_operator", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_embedded_reconcilers_and_own_controller(kube_cluster: Any) -> None:
    example = _load_example()
    for crd in __import__("kaito_core.api.crd", fromlist=["all_crds"]).all_crds():
        kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(crd))
    kube_cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    namespace = f"team-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", namespace)
    kube_cluster.kubectl("label", "namespace", namespace, f"{example.TEAM_LABEL}=vision")
    manager = await example.build(str(kube_cluster.kubeconfig))
    run = asyncio.create_task(manager.run())

    async def kubectl(*args: str, check: bool = True) -> Any:
        # In a thread: the embedded manager runs on this event loop and must keep running.
        return await asyncio.to_thread(kube_cluster.kubectl, *args, check=check)

    try:
        seed = Path(__file__).parents[2] / "examples" / "kaito_workspace_phi_3.yaml"
        await kubectl("apply", "-n", namespace, "-f", str(seed))
        deadline = time.monotonic() + 120
        while True:
            got = await kubectl("get", "svc", "workspace-phi-3-mini", "-n", namespace, "-o", "json", check=False)
            if (
                got.returncode == 0
                and json.loads(got.stdout)["metadata"].get("labels", {}).get(example.TEAM_LABEL) == "vision"
            ):
                break
            assert not run.done(), run.exception() if run.done() else None
            assert time.monotonic() < deadline, "the team label never reached the Service"
            await asyncio.sleep(0.5)
        ws = json.loads(
            (await kubectl("get", "workspace", "workspace-phi-3-mini", "-n", namespace, "-o", "json")).stdout
        )
        ready = {c["type"]: c["status"] for c in ws["status"]["conditions"]}
        assert ready["WorkspaceReady"] == "True"
        await kubectl("delete", "workspace", "workspace-phi-3-mini", "-n", namespace, "--timeout=50s")
        machines = await kubectl(
            "get", "machines.kaito.sh", "-l", f"kaito.sh/workspacenamespace={namespace}", "-o", "name"
        )
        assert machines.stdout.strip() == ""
    finally:
        manager.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run, 30)
        await manager.client.close()
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false")
