"""What one inference Workspace costs the apiserver, read from its audit log: the operator runs as its own
process and ServiceAccount, so every write it makes is one audit event.

* bring-your-own (a Ready kwok node with the Workspace's label, made before it): 7 writes from the create
  to WorkspaceReady, Events included (the goal is 5; docs/proof.md lists each write and why), at most 3 Events;
* provisioned (the simulated provisioner makes a Machine and its Node): 3 Events about the Workspace
  (nodes requested, nodes ready, serving), the Workspace controller's writes at 11 and the whole
  operator's (with the Machine controller's and the simulated Node) at 20, one Machine step of slack;
* no backlog: no write at all once it is Ready (not one Event drains later), and none at steady state.

Not a ``reliability`` scenario (no faults): it runs with the rest of the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    Fleet,
    OperatorProcess,
    audit_time,
    audited_writes,
    eventually,
    operator_kubeconfig,
    ready_now,
    workspace_doc,
)

from kaito_core.controllers.workspace import WORKSPACE
from kaito_core.engine import EVENT, NODE, Client
from kaito_core.provisioning import node_problem
from kaito_core.testing import ControlPlane, gpu_node_manifest

NS = "writes"
#: Finalizer+revision patch, ControllerRevision, Deployment, Service, 2 status patches, 1 Event.
BYO_WRITES_MAX = 7
#: The Workspace controller's part with a Machine: the above, the Machine, a third status patch, 2 Events more.
#: (Before the cache read its own writes this varied with load, 11 to 14: a reconcile on a cache that lagged
#: its own status patch wrote again and emitted "serving" twice.)
PROVISIONED_WORKSPACE_WRITES_MAX = 11
#: All of it: plus the Machine controller's 5 status updates (launch checkpoint, Launched, Registered,
#: Initialized, Ready), its 3 Events and the simulated provider's Node: 20, the same in every run since the
#: cache reads its own writes (before: 17 to 24, with 409s from updates on a stale Machine and repeated
#: Events). One of slack for a Node seen before kwok marks it Ready on a loaded machine (one more step).
PROVISIONED_WRITES_MAX = 21
EVENTS_MAX = 3
SETTLE_S = 8.0  # longer than the operator's not-ready requeue would need to show a write loop


def writes(plane: ControlPlane, user: str, since: float) -> list[tuple[float, str]]:
    """(time, "verb resource/name") of every write by ``user`` received after ``since`` (epoch s); no Leases."""
    out = []
    for when, event in audited_writes(plane, user):
        if when < since:
            continue
        ref = event.get("objectRef") or {}
        sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
        out.append((when, f"{event['verb']} {ref.get('resource')}{sub}/{ref.get('name')}"))
    return sorted(out)


def reads(plane: ControlPlane, user: str, since: float) -> list[str]:
    """GETs and LISTs (not WATCHes) by ``user`` received after ``since``: polling would show here."""
    out = []
    for line in plane.audit_log.read_text().splitlines():
        if f'"{user}"' not in line:
            continue
        event = json.loads(line)
        if (event.get("user", {}).get("username") == user and event.get("verb") in ("get", "list")
                and event.get("stage") == "ResponseComplete"
                and audit_time(event["requestReceivedTimestamp"]) >= since):
            out.append(f"{event['verb']} {event.get('requestURI')}")
    return out


@pytest.fixture
async def operator(private_plane: ControlPlane, fleet: Fleet, tmp_path: Path) -> AsyncIterator[tuple[str, Client]]:
    private_plane.kubectl("create", "namespace", NS, check=False)
    await fleet.start([NS])
    kubeconfig, user = operator_kubeconfig(private_plane, tmp_path)
    op = OperatorProcess(kubeconfig, tmp_path, identity="writes")
    op.start()
    try:
        await eventually(op.ready, 60, message="operator /readyz", describe=op.tail)
        yield user, fleet.client
    finally:
        op.stop()


async def _to_ready(plane: ControlPlane, user: str, client: Client, doc: dict[str, Any]) -> dict[str, Any]:
    """Create ``doc``, wait for WorkspaceReady, settle; returns its writes and Events."""
    name = doc["metadata"]["name"]
    await asyncio.sleep(1.1)  # keep writes still in flight from before out of the window
    since = time.time()
    await client.create(doc, kind=WORKSPACE)

    async def ready() -> bool:
        ws = await client.get_or_none(WORKSPACE, name, NS)
        return ws is not None and ready_now(ws)

    await eventually(ready, 90, interval=0.05, message=f"{name} Ready")
    ready_at = time.time()
    await asyncio.sleep(SETTLE_S)
    all_writes = writes(plane, user, since)
    events = [e for e in (await client.list(EVENT, NS)).items
              if e["involvedObject"].get("kind") == "Workspace" and e["involvedObject"].get("name") == name]
    return {"writes": [w for t, w in all_writes if t <= ready_at + 0.05],
            "after": [w for t, w in all_writes if t > ready_at + 0.05],
            "reads_at_rest": reads(plane, user, ready_at + 2.0),
            "events": events}


def _report(label: str, seen: dict[str, Any]) -> str:
    kinds = Counter(w.split("/")[0] for w in seen["writes"])
    return (f"{label}: {len(seen['writes'])} writes to Ready {dict(kinds)}; after Ready {seen['after']}; "
            f"Events {[(e['reason'], e.get('count')) for e in seen['events']]}; reads at rest {seen['reads_at_rest']}")


async def test_a_workspace_on_nodes_the_user_brings_costs_7_writes_and_1_event(
        private_plane: ControlPlane, operator: tuple[str, Client]) -> None:
    user, client = operator
    name = "byo-writes"
    await client.create(gpu_node_manifest(f"{name}-node", labels={"apps": name}), kind=NODE)

    async def usable() -> bool:
        node = await client.get_or_none(NODE, f"{name}-node")
        return node is not None and node_problem(node, gpus=1) is None

    await eventually(usable, 60, message="the BYO node Ready and untainted")
    seen = await _to_ready(private_plane, user, client, workspace_doc(name, NS))
    print(_report("bring-your-own", seen))
    assert not any("machines" in w for w in seen["writes"]), seen["writes"]
    assert len(seen["writes"]) <= BYO_WRITES_MAX, _report("bring-your-own", seen)
    assert len(seen["events"]) <= EVENTS_MAX
    assert "InferenceReady" in {e["reason"] for e in seen["events"]}  # describe still says it serves
    assert seen["after"] == [], "writes after Ready (a backlog)"
    assert seen["reads_at_rest"] == [], "polling reads at steady state"


async def test_a_provisioned_workspace_tells_its_story_in_3_events_and_nothing_drains_after_ready(
        private_plane: ControlPlane, operator: tuple[str, Client]) -> None:
    user, client = operator
    seen = await _to_ready(private_plane, user, client, workspace_doc("sim-writes", NS))
    print(_report("provisioned", seen))
    reasons = [e["reason"] for e in sorted(seen["events"], key=lambda e: e["firstTimestamp"])]
    assert len(seen["events"]) <= EVENTS_MAX, reasons
    assert {"MachineCreated", "NodesReady", "InferenceReady"} == set(reasons), reasons
    machine_side = [w for w in seen["writes"] if w.startswith(("update machines/status/", "create nodes/"))
                    or (w.startswith(("create events/", "patch events/")) and not w.split("/")[1].startswith("sim-"))]
    assert len(seen["writes"]) - len(machine_side) <= PROVISIONED_WORKSPACE_WRITES_MAX, _report("provisioned", seen)
    assert len(seen["writes"]) <= PROVISIONED_WRITES_MAX, _report("provisioned", seen)
    assert seen["after"] == [], "writes after Ready (a backlog)"
    assert seen["reads_at_rest"] == [], "polling reads at steady state"
