"""The cache reads our own writes before the watch brings them back (client-go's MutationCache, for
``get``): a reconciler woken again before its informer caught up must not update from the version
before its own write (a 409 and a retry) nor decide twice on it (an Event, a status message)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kaito_core.engine import CONFIGMAP, NODE, Client, RawResponse, SharedCache
from kaito_core.engine.own_writes import OwnWrites


class EchoAPI:
    """Answers every write with what was sent, at the next resourceVersion (a one-object apiserver)."""

    def __init__(self) -> None:
        self.rv = 10

    async def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                      headers: Mapping[str, str] | None = None, body: bytes | None = None,
                      timeout: float | None = None, before_send: Any = None) -> RawResponse:
        sent = json.loads(body or b"{}")
        self.rv += 1
        sent.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return RawResponse(200, json.dumps(sent).encode())

    def stream(self, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError


def _cm(rv: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": value},
            "metadata": {"name": "c", "namespace": "ns", "resourceVersion": rv}}


def _wired() -> tuple[Client, SharedCache]:
    client = Client(EchoAPI())
    cache = SharedCache(client)
    cache.informer(CONFIGMAP)
    client.on_written = cache.observe_write  # what the Manager does
    return client, cache


async def test_get_answers_with_our_write_until_the_informer_has_it() -> None:
    client, cache = _wired()
    store = cache.informer(CONFIGMAP).store
    store.upsert(_cm("10", "old"))
    await client.update(_cm("10", "new"), kind=CONFIGMAP)  # answered at resourceVersion 11
    got = cache.get(CONFIGMAP, "ns", "c")
    assert got is not None and got["data"] == {"k": "new"} and got["metadata"]["resourceVersion"] == "11"
    got["data"]["k"] = "mutated"  # a copy: the next reader is not affected
    assert cache.get(CONFIGMAP, "ns", "c")["data"] == {"k": "new"}  # type: ignore[index]
    # The watch brings a later version (someone else's write after ours): the informer's wins.
    store.upsert(_cm("12", "theirs"))
    assert cache.get(CONFIGMAP, "ns", "c")["data"] == {"k": "theirs"}  # type: ignore[index]
    # ... and ours is gone for good, even if the store were to go back.
    store.upsert(_cm("10", "old"))
    assert cache.get(CONFIGMAP, "ns", "c")["data"] == {"k": "old"}  # type: ignore[index]


async def test_a_created_object_is_read_back_before_its_watch_event() -> None:
    client, cache = _wired()
    assert cache.get(CONFIGMAP, "ns", "c") is None
    await client.create(_cm("", "made"), kind=CONFIGMAP)
    got = cache.get(CONFIGMAP, "ns", "c")
    assert got is not None and got["data"] == {"k": "made"}
    assert cache.list(CONFIGMAP, "ns") == []  # lists and indexes stay the informer's own snapshot


async def test_a_delete_the_informer_sees_ends_what_we_remembered() -> None:
    client, cache = _wired()
    informer = cache.informer(CONFIGMAP)
    await client.create(_cm("", "made"), kind=CONFIGMAP)
    gone = cache.get(CONFIGMAP, "ns", "c")
    assert gone is not None
    informer._emit_delete(gone, False)
    assert cache.get(CONFIGMAP, "ns", "c") is None


async def test_only_what_the_informer_would_hold_is_remembered() -> None:
    client = Client(EchoAPI())
    cache = SharedCache(client, namespace="mine")
    cache.informer(CONFIGMAP)
    cache.informer(NODE, label_selector="kaito.sh/machine")
    client.on_written = cache.observe_write
    other = _cm("", "x")  # namespace "ns", not watched
    await client.create(other, kind=CONFIGMAP)
    assert cache.get(CONFIGMAP, "ns", "c") is None
    await client.create({"metadata": {"name": "n1"}}, kind=NODE)  # not selected by the informer
    await client.create({"metadata": {"name": "n2", "labels": {"kaito.sh/machine": "m"}}}, kind=NODE)
    assert cache.get(NODE, None, "n1") is None
    assert cache.get(NODE, None, "n2") is not None


def test_an_entry_outlives_nothing_past_its_ttl() -> None:
    now = [0.0]
    own = OwnWrites(ttl=30.0, clock=lambda: now[0])
    own.record(("ns", "c"), _cm("11", "ours"))
    assert own.newest(("ns", "c"), _cm("10", "old"))["data"] == {"k": "ours"}  # type: ignore[index]
    now[0] = 31.0
    assert own.newest(("ns", "c"), _cm("10", "old"))["data"] == {"k": "old"}  # type: ignore[index]
    assert len(own) == 0
    own.record(("ns", "c"), _cm("not-a-number", "ours"))  # opaque versions: nothing kept
    assert len(own) == 0
