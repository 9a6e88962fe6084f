"""Embed kaito-core's reconcilers in your own operator.

Your operator keeps its own Manager (one shared cache, one leader election,
one metrics endpoint) and adds kaito-core's Workspace and Machine controllers
beside a controller of its own. Here the own controller stamps every Ready
Workspace's Service with the team that owns the namespace, a typical platform
add-on; the provisioner is the simulated one (use "aks", "karpenter" or your
own plugin in a real cluster).

Run it against `kaito up`'s cluster (start that with `--provisioner byo` or
stop its operator first, so only one Machine controller acts):

    python examples/embed_operator.py --kubeconfig .kaito/kubeconfig
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from kaito_core.controllers.machine import add_machine_controller
from kaito_core.controllers.workspace import WORKSPACE, add_workspace_controller
from kaito_core.engine import (
    Client,
    Controller,
    Manager,
    NotFoundError,
    Request,
    Result,
    SharedCache,
    configure_logging,
)
from kaito_core.engine.resources import NAMESPACE, SERVICE
from kaito_core.engine.settings import ManagerSettings
from kaito_core.provisioning import load_provisioner

TEAM_LABEL = "example.com/team"


class TeamLabeler:
    """Level-based: read the Workspace and its namespace from the cache, make the Service say the team."""

    def __init__(self, client: Client, cache: SharedCache):
        self.client = client
        self.cache = cache

    async def reconcile(self, request: Request) -> Result:
        ws = self.cache.get(WORKSPACE, request.namespace, request.name)
        if ws is None:
            return Result()
        ready = any(c.get("type") == "WorkspaceReady" and c.get("status") == "True"
                    for c in (ws.get("status") or {}).get("conditions", []))
        if not ready:
            return Result()
        namespace = self.cache.get(NAMESPACE, None, request.namespace or "") or {}
        team = ((namespace.get("metadata") or {}).get("labels") or {}).get(TEAM_LABEL, "unassigned")
        service = self.cache.get(SERVICE, request.namespace, request.name)
        if service is None:
            return Result(requeue_after=5)
        if ((service.get("metadata") or {}).get("labels") or {}).get(TEAM_LABEL) == team:
            return Result()
        try:
            await self.client.patch(SERVICE, request.name, {"metadata": {"labels": {TEAM_LABEL: team}}},
                                    request.namespace)
        except NotFoundError:
            return Result(requeue_after=5)
        return Result()


def namespace_to_workspaces(cache: SharedCache) -> Any:
    def map_fn(obj: dict[str, Any]) -> list[Request]:
        name = (obj.get("metadata") or {}).get("name")
        return [Request.for_object(ws) for ws in cache.list(WORKSPACE, namespace=name)]
    return map_fn


async def build(kubeconfig: str | None, provisioner: str = "simulated", http_port: int | None = 0) -> Manager:
    """Your Manager with kaito-core's two reconcilers and your own controller on it."""
    manager = await Manager.from_kubeconfig(kubeconfig, settings=ManagerSettings(
        name="my-platform-operator", http_port=http_port, bind_address="127.0.0.1"))
    add_machine_controller(manager, load_provisioner(provisioner, {"launch_delay": 0.2}))
    add_workspace_controller(manager, provisioner=provisioner)
    manager.add(Controller.for_(WORKSPACE)
                .owns(SERVICE)
                .watches(NAMESPACE, namespace_to_workspaces(manager.cache))
                .named("team-labeler")
                .build(TeamLabeler(manager.client, manager.cache)))
    return manager


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig")
    parser.add_argument("--provisioner", default="simulated")
    args = parser.parse_args()
    configure_logging("info", json=False)
    manager = await build(args.kubeconfig, args.provisioner)
    try:
        await manager.run()
    finally:
        await manager.client.close()


if __name__ == "__main__":
    asyncio.run(main())
