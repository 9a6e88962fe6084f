"""The engine end to end on the full control plane: a sample reconciler keeps a ConfigMap per Widget."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from engine_support import (
    WIDGET,
    SampleReconciler,
    eventually,
    install_widget_crd,
    make_settings,
    sample_controller,
    widget,
)

from kaito_core.engine import CONFIGMAP, EVENT, Client, Manager, Request, Result, TerminalError
from kaito_core.testing import Cluster

N = 200


@contextlib.asynccontextmanager
async def running(manager: Manager) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(manager.run())
    try:
        yield task
    finally:
        manager.stop()
        await asyncio.wait_for(task, 30)
        await manager.client.close()


async def widget_values(client: Client, namespace: str) -> dict[str, str]:
    return {w["metadata"]["name"]: w["spec"]["value"] for w in (await client.list(WIDGET, namespace)).items}


async def child_values(client: Client, namespace: str) -> dict[str, str]:
    return {c["metadata"]["name"].removesuffix("-data"): (c.get("data") or {}).get("value", "")
            for c in (await client.list(CONFIGMAP, namespace, label_selector="test.kaito.sh/widget")).items}


async def test_sample_controller_converges_recreates_and_collects(kube_cluster: Cluster, kube_namespace: str) -> None:
    ns = kube_namespace
    manager = await Manager.from_kubeconfig(kube_cluster.kubeconfig, make_settings(ns))
    client = manager.client
    await install_widget_crd(client)
    reconciler: SampleReconciler = sample_controller(manager, workers=8)
    async with running(manager):
        # Probes: ready only once the caches synced; metrics are served.
        await eventually(lambda: manager.ready, 30, message="manager ready")
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{manager.http_port}"
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200

        # 1. 200 widgets created at once converge.
        sem = asyncio.Semaphore(20)

        async def create(i: int) -> None:
            async with sem:
                await client.create(widget(f"w{i:03d}", ns, f"v{i}"))

        await asyncio.gather(*(create(i) for i in range(N)))

        async def converged() -> bool:
            return await child_values(client, ns) == await widget_values(client, ns)

        await eventually(converged, 90, interval=0.5, message="200 widgets converged")
        assert len(await child_values(client, ns)) == N
        assert reconciler.concurrent_same_key == 0

        # A spec change flows through.
        await client.patch(WIDGET, "w007", {"spec": {"value": "changed"}}, ns)
        await eventually(converged, 30, message="spec change reconciled")

        # 2. Deleting the child brings it back (the owns() watch enqueues the owner).
        await client.delete(CONFIGMAP, "w001-data", ns)
        await eventually(lambda: _exists(client, ns, "w001-data"), 30, message="child recreated")

        # 3. Deleting the owner garbage-collects the child; the controller stops reconciling it.
        await client.delete(WIDGET, "w002", ns)
        await eventually(lambda: _missing(client, ns, "w002-data"), 60, message="child garbage-collected")
        await eventually(lambda: "w002" not in {str(k) for k in manager.cache.list(WIDGET, ns, copy=False)}, 10)
        key = str(Request(ns, "w002"))
        await eventually(lambda: key in reconciler.gone, 10, message="deletion seen by the reconciler")
        applies = reconciler.applies[key]
        await asyncio.sleep(2)  # let the child's delete event through
        settled = reconciler.reconciles[key]
        await asyncio.sleep(3)
        assert reconciler.reconciles[key] == settled, "still reconciling a deleted widget"
        assert reconciler.applies[key] == applies
        assert not await _exists(client, ns, "w002-data")

        # Metrics use controller-runtime's names.
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{manager.http_port}/metrics") as resp:
            text = await resp.text()
        for name in ("controller_runtime_reconcile_total", "controller_runtime_reconcile_time_seconds_bucket",
                     "workqueue_depth", "workqueue_adds_total", "workqueue_queue_duration_seconds_bucket",
                     "workqueue_work_duration_seconds_bucket", "workqueue_retries_total"):
            assert name in text, name
        assert 'controller_runtime_reconcile_total{controller="widget",result="success"}' in text


async def _exists(client: Client, ns: str, name: str) -> bool:
    return await client.get_or_none(CONFIGMAP, name, ns) is not None


async def _missing(client: Client, ns: str, name: str) -> bool:
    return not await _exists(client, ns, name)


class Flaky:
    """Fails twice, then succeeds; raises TerminalError for 'bad'; crashes with a non-API error for 'boom'."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def reconcile(self, request: Request) -> Result:
        self.calls[request.name] = self.calls.get(request.name, 0) + 1
        if request.name == "bad":
            raise TerminalError("spec.value is nonsense", reason="InvalidSpec")
        if request.name == "flaky" and self.calls["flaky"] <= 2:
            raise RuntimeError("transient")
        if request.name == "boom" and self.calls["boom"] == 1:
            raise KeyError("a bug")
        if request.name == "periodic":
            return Result(requeue_after=0.3)
        return Result()


async def test_error_policy_and_events(kube_cluster: Cluster, kube_namespace: str) -> None:
    from kaito_core.engine import Controller

    ns = kube_namespace
    manager = await Manager.from_kubeconfig(kube_cluster.kubeconfig, make_settings(ns))
    await install_widget_crd(manager.client)
    flaky = Flaky()
    # One worker: a worker that died on the KeyError would stall everything after it.
    manager.add(Controller.for_(WIDGET).with_workers(1).named("flaky").build(flaky))
    async with running(manager):
        for name in ("bad", "flaky", "boom", "periodic", "fine"):
            await manager.client.create(widget(name, ns, "x"))
        await eventually(lambda: flaky.calls.get("flaky", 0) >= 3, 20, message="flaky retried to success")
        await eventually(lambda: flaky.calls.get("boom", 0) >= 2 and flaky.calls.get("fine", 0) >= 1, 20)
        await eventually(lambda: flaky.calls.get("periodic", 0) >= 4, 20, message="requeue_after honoured")

        async def terminal_event() -> bool:
            events: list[dict[str, Any]] = (await manager.client.list(EVENT, ns)).items
            return any(e.get("reason") == "InvalidSpec" and e["involvedObject"]["name"] == "bad" for e in events)

        await eventually(terminal_event, 20, message="Warning event for the terminal error")
        await asyncio.sleep(1)
        assert flaky.calls["bad"] == 1, "a TerminalError must not be retried"
        assert flaky.calls["flaky"] == 3 and flaky.calls["fine"] == 1


async def test_manager_stops_on_request_and_drains(kube_cluster: Cluster, kube_namespace: str) -> None:
    from kaito_core.engine import Controller

    class Slow:
        started = asyncio.Event()
        finished = False

        async def reconcile(self, request: Request) -> Result:
            self.started.set()
            await asyncio.sleep(1.0)
            Slow.finished = True
            return Result()

    manager = await Manager.from_kubeconfig(kube_cluster.kubeconfig, make_settings(kube_namespace))
    await install_widget_crd(manager.client)
    slow = Slow()
    manager.add(Controller.for_(WIDGET).build(slow))
    task = asyncio.create_task(manager.run())
    await manager.client.create(widget("one", kube_namespace, "x"))
    await asyncio.wait_for(slow.started.wait(), 20)
    manager.stop()
    await asyncio.wait_for(task, 20)
    assert Slow.finished, "in-flight reconcile was not allowed to finish"
    await manager.client.close()


async def test_event_recorder_aggregates_identical_events(kube_cluster: Cluster, kube_namespace: str) -> None:
    from kaito_core.engine import EventRecorder

    manager = await Manager.from_kubeconfig(kube_cluster.kubeconfig, make_settings(kube_namespace))
    client = manager.client
    try:
        cm = await client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "subject", "namespace": kube_namespace}})
        recorder = EventRecorder(client, "engine-test")
        recorder.start()
        for _ in range(3):
            recorder.warning(cm, "Broken", "the same message")
        recorder.normal(cm, "Fixed", "another message")
        await recorder.stop(flush_timeout=10)
        events = [e for e in (await client.list(EVENT, kube_namespace)).items
                  if e["involvedObject"].get("uid") == cm["metadata"]["uid"]]
        by_reason = {e["reason"]: e for e in events}
        assert len(events) == 2, events
        assert by_reason["Broken"]["count"] == 3 and by_reason["Broken"]["type"] == "Warning"
        assert by_reason["Fixed"]["count"] == 1 and by_reason["Fixed"]["source"]["component"] == "engine-test"
    finally:
        await client.close()


async def test_cache_with_label_selector_and_indexes(kube_cluster: Cluster, kube_namespace: str) -> None:
    from kaito_core.engine import INDEX_OWNER_UID, SharedCache, label_index

    manager = await Manager.from_kubeconfig(kube_cluster.kubeconfig, make_settings(kube_namespace))
    client = manager.client
    cache = SharedCache(client, namespace=kube_namespace, selectors={CONFIGMAP: "team=a"})
    try:
        owner = await client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "owner", "namespace": kube_namespace,
                                                  "labels": {"team": "a"}}})
        ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
        for i, team in enumerate(["a", "a", "b"]):
            await client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": f"c{i}", "namespace": kube_namespace,
                                              "labels": {"team": team, "slot": str(i)},
                                              "ownerReferences": [ref]}})
        cache.add_index(CONFIGMAP, "slot", label_index("slot"))
        await cache.start()
        assert await cache.wait_for_sync(30)
        names = sorted(o["metadata"]["name"] for o in cache.list(CONFIGMAP, kube_namespace))
        assert names == ["c0", "c1", "owner"]  # team=b is not cached at all
        children = cache.by_index(CONFIGMAP, INDEX_OWNER_UID, owner["metadata"]["uid"])
        assert sorted(o["metadata"]["name"] for o in children) == ["c0", "c1"]
        assert [o["metadata"]["name"] for o in cache.by_index(CONFIGMAP, "slot", "1")] == ["c1"]
        assert all("managedFields" not in o["metadata"] for o in cache.list(CONFIGMAP, copy=False))
    finally:
        await cache.stop()
        await client.close()
