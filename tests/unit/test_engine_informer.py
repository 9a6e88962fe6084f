"""Informer + store + cache against a scripted fake API server (no control plane)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from kaito_core.engine import (
    CONFIGMAP,
    INDEX_LABEL,
    INDEX_OWNER_UID,
    APIConnectionError,
    CacheNotWatchingError,
    Client,
    FuncHandler,
    Informer,
    RawResponse,
    RetryPolicy,
    SharedCache,
    Store,
    label_index,
    parse_selector,
)


def cm(name: str, rv: int, ns: str = "ns", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv), "labels": labels,
                         "managedFields": [{"manager": "x"}]}}


class FakeStream:
    def __init__(self, status: int = 200, body: bytes = b""):
        self.status = status
        self.headers: Mapping[str, str] = {}
        self.body = body
        self.lines_q: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

    def push(self, type_: str, obj: Mapping[str, Any]) -> None:
        self.lines_q.put_nowait(json.dumps({"type": type_, "object": obj}).encode())

    def end(self) -> None:
        self.lines_q.put_nowait(None)

    def fail(self, exc: BaseException) -> None:
        self.lines_q.put_nowait(exc)

    async def read(self) -> bytes:
        return self.body

    async def lines(self) -> AsyncIterator[bytes]:
        while True:
            item = await self.lines_q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class FakeAPI:
    """LIST answers from ``lists``; each WATCH takes the next FakeStream from ``streams``."""

    def __init__(self) -> None:
        self.lists: list[dict[str, Any]] = []
        self.streams: asyncio.Queue[FakeStream] = asyncio.Queue()
        self.watch_queries: list[dict[str, str]] = []

    def add_list(self, rv: int, *items: dict[str, Any]) -> None:
        self.lists.append({"metadata": {"resourceVersion": str(rv)}, "items": [dict(i) for i in items]})

    def new_stream(self, **kwargs: Any) -> FakeStream:
        stream = FakeStream(**kwargs)
        self.streams.put_nowait(stream)
        return stream

    async def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                      headers: Mapping[str, str] | None = None, body: bytes | None = None,
                      timeout: float | None = None) -> RawResponse:
        return RawResponse(200, json.dumps(self.lists.pop(0)).encode())

    @contextlib.asynccontextmanager
    async def stream(self, path: str, *, query: Sequence[tuple[str, str]] = (), **kwargs: Any
                     ) -> AsyncIterator[FakeStream]:
        self.watch_queries.append(dict(query))
        yield await self.streams.get()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, bool]] = []

    def handler(self) -> FuncHandler:
        return FuncHandler(
            on_add=lambda o: self.events.append(("add", o["metadata"]["name"], False)),
            on_update=lambda old, new: self.events.append(("update", new["metadata"]["name"], False)),
            on_delete=lambda o, unknown: self.events.append(("delete", o["metadata"]["name"], unknown)),
        )


async def until(cond: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - polling a condition is the point here
            await asyncio.sleep(0.001)


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


def informer_for(api: FakeAPI) -> Informer:
    client = Client(api, retry=RetryPolicy(attempts=1))
    return Informer(client, CONFIGMAP, backoff=(0.001, 0.002))


async def test_list_then_watch(api: FakeAPI) -> None:
    api.add_list(10, cm("a", 5), cm("b", 6))
    stream = api.new_stream()
    inf = informer_for(api)
    rec = Recorder()
    inf.add_handler(rec.handler())
    inf.start()
    assert await inf.wait_for_sync(2)
    assert sorted(rec.events) == [("add", "a", False), ("add", "b", False)]
    assert "managedFields" not in inf.store.get("ns", "a", copy=False)["metadata"]  # type: ignore[index]
    await until(lambda: api.watch_queries)
    assert api.watch_queries[0]["resourceVersion"] == "10"
    assert api.watch_queries[0]["allowWatchBookmarks"] == "true"
    stream.push("ADDED", cm("c", 11))
    stream.push("MODIFIED", cm("a", 12, app="x"))
    stream.push("DELETED", cm("b", 13))
    stream.push("BOOKMARK", {"kind": "ConfigMap", "metadata": {"resourceVersion": "20"}})
    await until(lambda: inf.resource_version == "20")
    assert rec.events[2:] == [("add", "c", False), ("update", "a", False), ("delete", "b", False)]
    assert sorted(k[1] for k in inf.store) == ["a", "c"]
    # The server closes the watch: resume from the bookmark's resourceVersion.
    api.new_stream()
    stream.end()
    await until(lambda: len(api.watch_queries) == 2)
    assert api.watch_queries[1]["resourceVersion"] == "20"
    assert inf.lists == 1
    await inf.stop()


async def test_broken_watch_resumes_from_last_rv(api: FakeAPI) -> None:
    api.add_list(10, cm("a", 5))
    stream = api.new_stream()
    inf = informer_for(api)
    inf.start()
    await inf.wait_for_sync(2)
    stream.push("MODIFIED", cm("a", 15))
    await until(lambda: inf.resource_version == "15")
    api.new_stream()
    stream.fail(APIConnectionError("reset"))
    await until(lambda: len(api.watch_queries) == 2)
    assert api.watch_queries[1]["resourceVersion"] == "15"
    assert inf.lists == 1  # no re-list needed
    await inf.stop()


@pytest.mark.parametrize("how", ["error-event", "http-410"])
async def test_gone_relists_and_emits_the_difference(api: FakeAPI, how: str) -> None:
    api.add_list(10, cm("keep", 1), cm("change", 2), cm("vanish", 3))
    stream = api.new_stream()
    inf = informer_for(api)
    rec = Recorder()
    inf.add_handler(rec.handler())
    inf.start()
    await inf.wait_for_sync(2)
    rec.events.clear()
    # Meanwhile (events lost): "change" changed, "vanish" was deleted, "new" was created.
    api.add_list(50, cm("keep", 1), cm("change", 40), cm("new", 45))
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
    if how == "error-event":
        api.new_stream()
        stream.push("ERROR", gone)
    else:
        # The watch ends; the next watch request is answered 410 outright.
        api.streams.put_nowait(FakeStream(410, json.dumps(gone).encode()))
        api.new_stream()
        stream.end()
    await until(lambda: inf.lists == 2)
    await until(lambda: len(rec.events) == 3)
    assert sorted(rec.events) == [("add", "new", False), ("delete", "vanish", True), ("update", "change", False)]
    assert sorted(k[1] for k in inf.store) == ["change", "keep", "new"]
    await until(lambda: any(q.get("resourceVersion") == "50" for q in api.watch_queries))
    await inf.stop()


async def test_late_handler_gets_replay(api: FakeAPI) -> None:
    api.add_list(10, cm("a", 1), cm("b", 2))
    api.new_stream()
    inf = informer_for(api)
    inf.start()
    await inf.wait_for_sync(2)
    rec = Recorder()
    inf.add_handler(rec.handler())
    assert sorted(rec.events) == [("add", "a", False), ("add", "b", False)]
    await inf.stop()


async def test_failing_handler_does_not_stop_informer(api: FakeAPI) -> None:
    api.add_list(10, cm("a", 1))
    stream = api.new_stream()
    inf = informer_for(api)

    def boom(obj: Any) -> None:
        raise RuntimeError("handler bug")

    inf.add_handler(FuncHandler(on_add=boom))
    rec = Recorder()
    inf.add_handler(rec.handler())
    inf.start()
    await inf.wait_for_sync(2)
    stream.push("ADDED", cm("b", 11))
    await until(lambda: ("add", "b", False) in rec.events)
    await inf.stop()


async def test_resync_redelivers_updates(api: FakeAPI) -> None:
    api.add_list(10, cm("a", 1))
    api.new_stream()
    client = Client(api, retry=RetryPolicy(attempts=1))
    inf = Informer(client, CONFIGMAP, resync_period=0.02)
    rec = Recorder()
    inf.add_handler(rec.handler())
    inf.start()
    await until(lambda: rec.events.count(("update", "a", False)) >= 2)
    await inf.stop()


def test_store_indices_and_selectors() -> None:
    store = Store()
    store.add_indexer("app", label_index("app"))
    owned = cm("child", 1, app="web")
    owned["metadata"]["ownerReferences"] = [{"uid": "u1", "kind": "Widget", "name": "w", "controller": True}]
    store.upsert(owned)
    store.upsert(cm("other", 2, "ns2", app="db", tier="x"))
    assert [o["metadata"]["name"] for o in store.by_index(INDEX_OWNER_UID, "u1")] == ["child"]
    assert [o["metadata"]["name"] for o in store.by_index("app", "db")] == ["other"]
    assert [o["metadata"]["name"] for o in store.list("ns2")] == ["other"]
    assert [o["metadata"]["name"] for o in store.list(label_selector="app in (web,api)")] == ["child"]
    assert [o["metadata"]["name"] for o in store.list(label_selector={"app": "db"})] == ["other"]
    # Update moves the object between index values.
    store.upsert(cm("child", 3, app="db"))
    assert store.by_index(INDEX_OWNER_UID, "u1") == []
    assert sorted(o["metadata"]["name"] for o in store.by_index("app", "db")) == ["child", "other"]
    store.delete(("ns", "child"))
    assert [o["metadata"]["name"] for o in store.by_index("app", "db")] == ["other"]
    # Reads are copies unless asked otherwise.
    got = store.get("ns2", "other")
    assert got is not None
    got["metadata"]["name"] = "mutated"
    assert store.get("ns2", "other", copy=False)["metadata"]["name"] == "other"  # type: ignore[index]


def test_label_selector_reads_use_the_label_index() -> None:
    """An equality selector reads one index bucket, and the answer equals a full scan's."""
    store = Store()
    for i in range(200):
        store.upsert(cm(f"c{i}", i, f"ns{i % 3}", app=f"a{i % 10}", tier="web" if i % 2 else "db"))
    scanned = Store(indexers={})  # no index at all: every read scans
    for _, obj in store.items():
        scanned.upsert(obj)
    for ns, selector in [(None, "app=a3"), ("ns1", "app=a3,tier=web"), ("ns2", "app==a4,tier!=db"),
                         (None, {"tier": "db", "app": "a2"}), ("ns0", "app in (a1,a2)"), (None, "app=none"),
                         ("ns1", None), (None, "tier")]:
        got = sorted(o["metadata"]["name"] for o in store.list(ns, selector))
        want = sorted(o["metadata"]["name"] for o in scanned.list(ns, selector))
        assert got == want, (ns, selector)
    assert parse_selector("a=1,b==2,c!=3,d in (x),e").equalities == (("a", "1"), ("b", "2"))
    assert store.by_index(INDEX_LABEL, "app=a7") and all(
        o["metadata"]["labels"]["app"] == "a7" for o in store.by_index(INDEX_LABEL, "app=a7"))
    # An update moves the object between label buckets.
    store.upsert(cm("c7", 999, "ns1", app="moved"))
    assert [o["metadata"]["name"] for o in store.list(label_selector="app=moved")] == ["c7"]
    assert "c7" not in {o["metadata"]["name"] for o in store.list(label_selector="app=a7")}


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("a=1", {"a": "1"}, True),
    ("a==1,b!=2", {"a": "1", "b": "3"}, True),
    ("a!=1", {}, True),
    ("a", {"a": ""}, True),
    ("!a", {"a": "x"}, False),
    ("a in (x, y),b notin (z)", {"a": "y", "b": "q"}, True),
    ("a in (x,y)", {"a": "z"}, False),
    ("", {}, True),
])
def test_label_selector(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector).matches(labels) is expected


async def test_shared_cache_shares_informers(api: FakeAPI) -> None:
    client = Client(api, retry=RetryPolicy(attempts=1))
    cache = SharedCache(client)
    assert cache.informer(CONFIGMAP) is cache.informer(CONFIGMAP)
    assert cache.informer(CONFIGMAP, label_selector="a=b") is not cache.informer(CONFIGMAP)
    with pytest.raises(CacheNotWatchingError):
        cache.get(CONFIGMAP.__class__("", "v1", "Secret", "secrets"), "ns", "x")


async def test_cached_objects_share_their_repeated_strings(api: FakeAPI) -> None:
    api.add_list(10, cm("a", 5), cm("b", 6))
    stream = api.new_stream()
    inf = informer_for(api)
    inf.start()
    assert await inf.wait_for_sync(2)
    stream.push("ADDED", cm("c", 11))  # parsed on its own, apart from the LIST page
    await until(lambda: ("ns", "c") in inf.store)
    a, b, c = (inf.store.get("ns", name, copy=False) for name in "abc")
    assert a is not None and b is not None and c is not None
    # One string object for a key or a short value however many objects carry it.
    key_a, key_c = (next(k for k in obj if k == "metadata") for obj in (a, c))
    assert key_a is key_c
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"] is c["metadata"]["namespace"]
    await inf.stop()


def test_intern_strings_leaves_long_values_and_other_types_alone() -> None:
    from kaito_core.engine.transforms import INTERN_MAX_LENGTH, intern_strings

    long = "x" * (INTERN_MAX_LENGTH + 1)
    obj = json.loads(json.dumps({"k": [long, 1, None, True, {"deep": "v"}]}))
    out = intern_strings(obj)
    assert out == obj
    assert out["k"][0] is obj["k"][0]  # a message, a JSON annotation: kept as it is
