"""The public MockTransport: an embedder tests code that uses Client with no API server, as with httpx."""

from __future__ import annotations

import asyncio

import pytest

from kaito_core.engine import (
    CONFIGMAP,
    APIConnectionError,
    Client,
    MockTransport,
    NotFoundError,
    RawResponse,
    RetryPolicy,
    TransportRequest,
    json_response,
)
from kaito_core.engine.mock_transport import not_found

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns", "resourceVersion": "7"}}


async def test_the_handler_answers_and_every_request_is_kept() -> None:
    def handler(request: TransportRequest) -> RawResponse:
        if request.path == "/api/v1/namespaces/ns/configmaps/x":
            return json_response(CM)
        return json_response(not_found(), status=404)

    transport = MockTransport(handler)
    client = Client(transport)
    assert (await client.get(CONFIGMAP, "x", "ns"))["metadata"]["resourceVersion"] == "7"
    with pytest.raises(NotFoundError):
        await client.get(CONFIGMAP, "y", "ns")
    assert [(r.method, r.path) for r in transport.requests] == [
        ("GET", "/api/v1/namespaces/ns/configmaps/x"), ("GET", "/api/v1/namespaces/ns/configmaps/y")]


async def test_an_async_handler_that_raises_plays_a_dropped_connection_and_the_client_retries() -> None:
    attempts = 0

    async def handler(request: TransportRequest) -> RawResponse:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise APIConnectionError("connection reset")
        return json_response({**CM, "data": request.json()["data"]} if request.body else CM)

    transport = MockTransport(handler)
    client = Client(transport, retry=RetryPolicy(attempts=3, initial_backoff=0.001, max_backoff=0.002))
    applied = await client.apply({**CM, "data": {"a": "1"}}, kind=CONFIGMAP)
    assert applied["data"] == {"a": "1"}
    assert attempts == 2  # apply is idempotent: the dropped one was sent again
    assert transport.requests[-1].method == "PATCH"
    assert transport.requests[-1].param("fieldManager") == client.field_manager


async def test_a_watch_gets_the_stream_handlers_events_then_stays_quiet() -> None:
    transport = MockTransport(lambda _r: json_response({}),
                              stream_handler=lambda _r: [{"type": "ADDED", "object": CM}])
    client = Client(transport)
    events = client.watch(CONFIGMAP, "ns").__aiter__()
    first = await events.__anext__()
    assert (first.type, first.object["metadata"]["name"]) == ("ADDED", "x")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(events.__anext__(), 0.2)  # nothing more: a quiet server
    assert transport.requests[-1].param("watch") == "1"


async def test_without_a_stream_handler_a_watch_fails_like_a_broken_connection() -> None:
    client = Client(MockTransport(lambda _r: json_response({})))
    with pytest.raises(APIConnectionError, match="no stream_handler"):
        async for _ in client.watch(CONFIGMAP, "ns"):
            pass
