"""Shared by the engine integration tests (no tests here): a tiny CRD and a sample reconciler.

The sample reconciler keeps one ConfigMap per Widget (``<name>-data``, data
``value`` = the widget's ``spec.value``), owned by the widget, written with
server-side apply. It records every reconcile (key, start, end) so tests can
check convergence, overlap and that deleted widgets stop being reconciled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from kaito_core.engine import (
    CONFIGMAP,
    CRD,
    Client,
    Controller,
    Manager,
    ManagerSettings,
    NotFoundError,
    Request,
    ResourceKind,
    Result,
    SharedCache,
)
from kaito_core.testing.waiting import eventually

__all__ = ["WIDGET", "SampleReconciler", "eventually", "install_widget_crd", "make_settings", "sample_controller",
           "widget"]

WIDGET = ResourceKind("test.kaito.sh", "v1", "Widget", "widgets")

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.kaito.sh"},
    "spec": {
        "group": "test.kaito.sh",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"value": {"type": "string"}}},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            }}},
        }],
    },
}




async def install_widget_crd(client: Client) -> None:
    await client.apply(WIDGET_CRD, kind=CRD, force=True)

    async def served() -> bool:
        crd = await client.get(CRD, "widgets.test.kaito.sh")
        established = any(c.get("type") == "Established" and c.get("status") == "True"
                          for c in (crd.get("status") or {}).get("conditions") or [])
        if not established:
            return False
        try:
            await client.list_page(WIDGET, "default", limit=1)
            return True
        except NotFoundError:
            return False

    await eventually(served, 30, message="Widget CRD established")


def widget(name: str, namespace: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "test.kaito.sh/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"value": value}}


class SampleReconciler:
    """Keeps ``<widget>-data`` ConfigMaps in line with their Widgets."""

    def __init__(self, client: Client, cache: SharedCache, *, work_time: float = 0.0,
                 requeue_after: float | None = None, on_interval: Callable[[str, float, float], None] | None = None):
        self.client = client
        self.cache = cache
        self.work_time = work_time
        self.requeue_after = requeue_after
        self.on_interval = on_interval
        self.reconciles: Counter[str] = Counter()
        self.applies: Counter[str] = Counter()
        self.gone: set[str] = set()
        self.latencies: list[float] = []
        self.active: set[str] = set()
        self.concurrent_same_key = 0

    async def reconcile(self, request: Request) -> Result:
        key = str(request)
        if key in self.active:
            self.concurrent_same_key += 1
        self.active.add(key)
        start = time.time()
        try:
            self.reconciles[key] += 1
            obj = self.cache.get(WIDGET, request.namespace, request.name, copy=False)
            if obj is None:
                # Deleted: the ConfigMap goes with it by ownerReference; nothing to do.
                self.gone.add(key)
                return Result()
            if self.work_time:
                await asyncio.sleep(self.work_time)
            meta = obj["metadata"]
            value = str((obj.get("spec") or {}).get("value", ""))
            child_name = f"{request.name}-data"
            current = self.cache.get(CONFIGMAP, request.namespace, child_name, copy=False)
            if current is None or (current.get("data") or {}).get("value") != value:
                await self.client.apply({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {
                        "name": child_name, "namespace": request.namespace,
                        "labels": {"test.kaito.sh/widget": request.name},
                        "ownerReferences": [{"apiVersion": WIDGET.api_version, "kind": WIDGET.kind,
                                             "name": meta["name"], "uid": meta["uid"],
                                             "controller": True, "blockOwnerDeletion": True}],
                    },
                    "data": {"value": value},
                }, force=True)
                self.applies[key] += 1
            return Result(requeue_after=self.requeue_after)
        finally:
            self.active.discard(key)
            end = time.time()
            if self.on_interval:
                self.on_interval(key, start, end)


def sample_controller(manager: Manager, *, workers: int = 4, **kwargs: Any) -> SampleReconciler:
    reconciler = SampleReconciler(manager.client, manager.cache, **kwargs)
    manager.add(Controller.for_(WIDGET).owns(CONFIGMAP).with_workers(workers).named("widget")
                .build(reconciler))
    return reconciler


def make_settings(namespace: str | None, **kwargs: Any) -> ManagerSettings:
    options: dict[str, Any] = {"namespace": namespace, "http_port": 0, "handle_signals": False,
                               "bind_address": "127.0.0.1", "graceful_shutdown_timeout": 5}
    return ManagerSettings(**{**options, **kwargs})
