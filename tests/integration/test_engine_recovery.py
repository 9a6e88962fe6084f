"""Watch recovery on a private control plane: apiserver restarts and expired resourceVersions.

After each disruption the cache must equal a fresh LIST and every change must
have been reconciled (the ConfigMaps match the final widget values; deleted
widgets were seen as gone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from engine_support import (
    WIDGET,
    SampleReconciler,
    eventually,
    install_widget_crd,
    make_settings,
    sample_controller,
    widget,
)

from kaito_core.engine import CONFIGMAP, APIError, Client, Informer, Manager, Request
from kaito_core.testing import ControlPlane

NS = "default"


@contextlib.asynccontextmanager
async def started(plane: ControlPlane) -> AsyncIterator[tuple[Manager, SampleReconciler]]:
    manager = await Manager.from_kubeconfig(plane.kubeconfig, make_settings(NS))
    # Fail fast while the apiserver is down: the informer's own backoff is the retry.
    manager.client.retry = type(manager.client.retry)(attempts=2, initial_backoff=0.1, max_backoff=0.2)
    await install_widget_crd(manager.client)
    reconciler = sample_controller(manager, workers=4)
    task = asyncio.create_task(manager.run())
    await eventually(lambda: manager.ready, 30, message="manager ready")
    try:
        yield manager, reconciler
    finally:
        manager.stop()
        await asyncio.wait_for(task, 30)
        await manager.client.close()


def informer(manager: Manager) -> Informer:
    return manager.cache.informer(WIDGET)


async def cache_matches_fresh_list(manager: Manager) -> bool:
    for kind in (WIDGET, CONFIGMAP):
        fresh = {(o["metadata"]["name"], o["metadata"]["resourceVersion"])
                 for o in (await manager.client.list(kind, NS)).items}
        cached = {(o["metadata"]["name"], o["metadata"]["resourceVersion"])
                  for o in manager.cache.list(kind, NS, copy=False)}
        if fresh != cached:
            return False
    return True


async def all_reconciled(client: Client, reconciler: SampleReconciler, deleted: set[str]) -> bool:
    widgets = {w["metadata"]["name"]: w["spec"]["value"] for w in (await client.list(WIDGET, NS)).items}
    children = {c["metadata"]["name"].removesuffix("-data"): c["data"]["value"]
                for c in (await client.list(CONFIGMAP, NS, label_selector="test.kaito.sh/widget")).items}
    live_children = {k: v for k, v in children.items() if k not in deleted}  # no GC on a light plane
    return widgets == live_children and all(str(Request(NS, name)) in reconciler.gone for name in deleted)


async def churn(client: Client, names: list[str], rounds: int, log: dict[str, str]) -> None:
    """Keep changing widgets, tolerating the apiserver being away."""
    for r in range(rounds):
        for name in names:
            value = f"{name}-r{r}"
            with contextlib.suppress(APIError, OSError):
                await client.patch(WIDGET, name, {"spec": {"value": value}}, NS, timeout=2)
                log[name] = value
        await asyncio.sleep(0.05)


async def test_apiserver_restart_while_objects_change(light_control_plane: ControlPlane) -> None:
    plane = light_control_plane
    async with started(plane) as (manager, reconciler):
        client = manager.client
        names = [f"r{i:02d}" for i in range(40)]
        for name in names:
            await client.create(widget(name, NS, "initial"))
        written: dict[str, str] = {}
        watches_before = informer(manager).watches
        writer = asyncio.create_task(churn(client, names, 30, written))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(plane.restart_apiserver, downtime=2.0)
        await writer
        # More changes after the restart: creates and deletes too.
        for name in names[:5]:
            await client.delete(WIDGET, name, NS)
        for i in range(5):
            await client.create(widget(f"late{i}", NS, "late"))
        deleted = set(names[:5])
        await eventually(lambda: all_reconciled(client, reconciler, deleted), 60, interval=0.5,
                         message="every change reconciled after restart")
        await eventually(lambda: cache_matches_fresh_list(manager), 30, message="cache equals a fresh LIST")
        assert informer(manager).watches > watches_before, "the informer never re-watched"
        assert reconciler.concurrent_same_key == 0


async def test_expired_resource_version_relists(light_control_plane: ControlPlane) -> None:
    plane = light_control_plane
    async with started(plane) as (manager, reconciler):
        client = manager.client
        names = [f"c{i:02d}" for i in range(30)]
        for name in names:
            await client.create(widget(name, NS, "initial"))
        await eventually(lambda: all_reconciled(client, reconciler, set()), 30, message="initial convergence")
        lists_before = informer(manager).lists
        # Move etcd's revision well past the informer's (objects it does not watch), then compact:
        # the informer's resourceVersion is now older than anything etcd or a fresh watch cache keeps.
        other = "other"
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
        for i in range(50):
            await client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": f"noise{i}", "namespace": other}})
        await asyncio.to_thread(plane.compact_etcd)
        # Restart: the informer has to re-watch from its old resourceVersion and gets 410 Gone.
        restart = asyncio.create_task(asyncio.to_thread(plane.restart_apiserver, downtime=1.0))
        await restart
        # Changes right after the restart, while the informer backs off / re-lists:
        # the re-list must surface them as a difference (updates, deletes, adds).
        changes: dict[str, str] = {}
        for name in names[:10]:
            await client.patch(WIDGET, name, {"spec": {"value": "after-compaction"}}, NS)
            changes[name] = "after-compaction"
        deleted = set(names[10:15])
        for name in deleted:
            await client.delete(WIDGET, name, NS)
        await client.create(widget("fresh", NS, "new"))
        await eventually(lambda: informer(manager).lists > lists_before, 30, message="re-list after 410")
        await eventually(lambda: all_reconciled(client, reconciler, deleted), 60, interval=0.5,
                         message="every change reconciled after compaction")
        await eventually(lambda: cache_matches_fresh_list(manager), 30, message="cache equals a fresh LIST")
        values: dict[str, Any] = {o["metadata"]["name"]: o["data"]["value"]
                                  for o in manager.cache.list(CONFIGMAP, NS, copy=False)}
        assert all(values[f"{name}-data"] == "after-compaction" for name in changes)
