"""Machines are created in bounded batches per reconcile (issue 17, item 2): a Workspace asking for many
GPU nodes never makes one reconcile issue an unbounded burst of creates (each one a VM)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kaito_presets import default_catalog

from kaito_core.api import MAX_NODE_COUNT, Workspace
from kaito_core.controllers.workspace import MACHINE, WorkspaceSettings
from kaito_core.controllers.workspace.reconciler import WorkspaceReconciler

CATALOG = default_catalog()


class FakeCache:
    """Only what the node planning reads: the Workspace's Machines (and no Nodes)."""

    def __init__(self) -> None:
        self.machines: list[dict[str, Any]] = []

    def list(self, kind: Any, namespace: str | None = None, **_: Any) -> list[dict[str, Any]]:
        return [dict(m) for m in self.machines] if kind == MACHINE else []

    def get(self, kind: Any, namespace: str | None, name: str, **_: Any) -> dict[str, Any] | None:
        return None


class FakeClient:
    def __init__(self) -> None:
        self.created: list[str] = []

    async def create(self, manifest: Mapping[str, Any], *, kind: Any) -> dict[str, Any]:
        assert kind == MACHINE
        self.created.append(manifest["metadata"]["name"])
        return dict(manifest)


def workspace(count: int) -> Workspace:
    return Workspace.model_validate({
        "metadata": {"name": "big", "namespace": "ns", "uid": "uid-1"},
        "resource": {"count": count, "instanceType": "Standard_NC6s_v3",
                     "labelSelector": {"matchLabels": {"apps": "big"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    })


async def test_machines_are_created_in_bounded_batches() -> None:
    settings = WorkspaceSettings()
    assert settings.machine_create_batch == 8
    cache, client = FakeCache(), FakeClient()
    reconciler = WorkspaceReconciler(client, cache, settings=settings, catalog=CATALOG)  # type: ignore[arg-type]
    ws = workspace(MAX_NODE_COUNT)
    preset = CATALOG.find_model("phi-3-mini-4k-instruct")
    sku = CATALOG.find_sku("Standard_NC6s_v3")
    passes = 0
    while len(client.created) < MAX_NODE_COUNT:
        before = len(client.created)
        _, state = await reconciler._nodes(ws, preset, sku)
        passes += 1
        made = len(client.created) - before
        assert made == min(8, MAX_NODE_COUNT - before), f"pass {passes} created {made} Machines"
        assert not state.ready
        if len(client.created) < MAX_NODE_COUNT:
            assert f"{MAX_NODE_COUNT - len(client.created)} to create" in state.message, state.message
        # the cache catches up with what was created
        cache.machines = [{"apiVersion": "kaito.sh/v1alpha1", "kind": "Machine",
                           "metadata": {"name": name, "labels": {"kaito.sh/workspace": "big",
                                                                 "kaito.sh/workspacenamespace": "ns"}}}
                          for name in client.created]
    assert passes == MAX_NODE_COUNT // 8
    assert len(set(client.created)) == MAX_NODE_COUNT
    await reconciler._nodes(ws, preset, sku)
    assert len(client.created) == MAX_NODE_COUNT, "nothing more once every slot has its Machine"


async def test_a_small_workspace_is_created_in_one_pass() -> None:
    cache, client = FakeCache(), FakeClient()
    reconciler = WorkspaceReconciler(client, cache, settings=WorkspaceSettings(machine_create_batch=2),  # type: ignore[arg-type]
                                     catalog=CATALOG)
    ws = workspace(2)
    await reconciler._nodes(ws, CATALOG.find_model("phi-3-mini-4k-instruct"), CATALOG.find_sku("Standard_NC6s_v3"))
    assert len(client.created) == 2
