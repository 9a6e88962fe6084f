"""Client: error mapping and the retry policy, through an injected fake transport."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kaito_core.engine import (
    CONFIGMAP,
    AlreadyExistsError,
    APIConnectionError,
    APIError,
    Client,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    MockTransport,
    NotFoundError,
    RawResponse,
    RequestTimeoutError,
    ResourceKind,
    RetryPolicy,
    ServerError,
    TooManyRequestsError,
    TransportRequest,
    UnauthorizedError,
    error_from_response,
)


def status(code: int, reason: str = "", message: str = "boom", **details: Any) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                       "reason": reason, "message": message, "details": details}).encode()


class FakeTransport(MockTransport):
    """Answers from a script: each entry a RawResponse or an exception to raise (the public
    MockTransport with a scripted handler)."""

    def __init__(self, *script: RawResponse | BaseException):
        self.script = list(script)
        super().__init__(self._next)

    def _next(self, _request: TransportRequest) -> RawResponse:
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    @property
    def calls(self) -> list[dict[str, Any]]:
        return [{"method": r.method, "path": r.path, "query": list(r.query), "headers": dict(r.headers),
                 "body": r.body, "timeout": r.timeout} for r in self.requests]


def ok(obj: Any = None) -> RawResponse:
    return RawResponse(200, json.dumps(obj or {}).encode())


FAST = RetryPolicy(attempts=4, initial_backoff=0.001, max_backoff=0.002)
CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns"}, "data": {"a": "1"}}


@pytest.mark.parametrize(("code", "reason", "cls"), [
    (401, "Unauthorized", UnauthorizedError),
    (403, "Forbidden", ForbiddenError),
    (404, "NotFound", NotFoundError),
    (409, "Conflict", ConflictError),
    (409, "AlreadyExists", AlreadyExistsError),
    (410, "Expired", GoneError),
    (422, "Invalid", InvalidError),
    (429, "TooManyRequests", TooManyRequestsError),
    (500, "InternalError", ServerError),
    (503, "ServiceUnavailable", ServerError),
    (504, "Timeout", RequestTimeoutError),
    (400, "BadRequest", APIError),
])
def test_error_mapping(code: int, reason: str, cls: type[APIError]) -> None:
    err = error_from_response(code, status(code, reason, "it broke"))
    assert type(err) is cls
    assert err.status == code and err.reason == reason and err.message == "it broke"
    assert isinstance(err, APIError)


def test_invalid_error_carries_causes() -> None:
    err = error_from_response(422, status(422, "Invalid", causes=[
        {"reason": "FieldValueRequired", "field": "spec.resource", "message": "Required value"}]))
    assert isinstance(err, InvalidError)
    assert err.causes == [{"reason": "FieldValueRequired", "field": "spec.resource", "message": "Required value"}]


def test_retry_after_parsed() -> None:
    err = error_from_response(429, status(429, "TooManyRequests"), {"Retry-After": "3"})
    assert isinstance(err, TooManyRequestsError) and err.retry_after == 3.0
    err2 = error_from_response(429, status(429, "TooManyRequests", retryAfterSeconds=2))
    assert isinstance(err2, TooManyRequestsError) and err2.retry_after == 2.0


def test_non_json_body() -> None:
    err = error_from_response(502, b"<html>bad gateway</html>")
    assert isinstance(err, ServerError) and "bad gateway" in err.message


async def test_get_path_and_timeout() -> None:
    transport = FakeTransport(ok(CM))
    client = Client(transport, timeout=3.5)
    assert await client.get(CONFIGMAP, "x", "ns") == CM
    call = transport.calls[0]
    assert call["method"] == "GET" and call["path"] == "/api/v1/namespaces/ns/configmaps/x"
    assert call["timeout"] == 3.5
    transport.script.append(ok(CM))
    await client.get(CONFIGMAP, "x", "ns", timeout=1)
    assert transport.calls[1]["timeout"] == 1


async def test_crd_and_cluster_scoped_paths() -> None:
    widget = ResourceKind("example.com", "v1", "Widget", "widgets")
    node = ResourceKind("", "v1", "Node", "nodes", namespaced=False)
    assert widget.path("ns", "w", "status") == "/apis/example.com/v1/namespaces/ns/widgets/w/status"
    assert widget.path() == "/apis/example.com/v1/widgets"
    assert node.path("ignored", "n1") == "/api/v1/nodes/n1"


async def test_apply_is_server_side_apply() -> None:
    transport = FakeTransport(ok(CM), ok(CM))
    client = Client(transport, retry=FAST)
    await client.apply(CM)
    call = transport.calls[0]
    assert call["method"] == "PATCH"
    assert call["headers"]["Content-Type"] == "application/apply-patch+yaml"
    assert ("fieldManager", "kaito-core") in call["query"]
    assert ("force", "true") not in call["query"]
    await client.apply(CM, force=True, field_manager="other")
    assert ("force", "true") in transport.calls[1]["query"]
    assert ("fieldManager", "other") in transport.calls[1]["query"]


async def test_status_writes_hit_subresource() -> None:
    transport = FakeTransport(ok(CM), ok(CM), ok(CM))
    client = Client(transport)
    await client.update_status(CM)
    await client.patch_status(CONFIGMAP, "x", {"status": {"a": 1}}, "ns")
    await client.apply_status(CM)
    assert [c["path"] for c in transport.calls] == ["/api/v1/namespaces/ns/configmaps/x/status"] * 3
    assert transport.calls[1]["headers"]["Content-Type"] == "application/merge-patch+json"


@pytest.mark.parametrize("code", [429, 500, 503])
async def test_retries_retryable_statuses_for_idempotent(code: int) -> None:
    transport = FakeTransport(RawResponse(code, status(code)), RawResponse(code, status(code)), ok(CM))
    client = Client(transport, retry=FAST)
    assert await client.get(CONFIGMAP, "x", "ns") == CM
    assert len(transport.calls) == 3


async def test_retry_gives_up_after_attempts() -> None:
    transport = FakeTransport(*[RawResponse(500, status(500)) for _ in range(4)])
    client = Client(transport, retry=FAST)
    with pytest.raises(ServerError):
        await client.get(CONFIGMAP, "x", "ns")
    assert len(transport.calls) == 4


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 410, 422])
async def test_no_retry_on_client_errors(code: int) -> None:
    transport = FakeTransport(RawResponse(code, status(code)), ok(CM))
    client = Client(transport, retry=FAST)
    with pytest.raises(APIError):
        await client.get(CONFIGMAP, "x", "ns")
    assert len(transport.calls) == 1


async def test_create_not_retried_on_5xx_but_on_429() -> None:
    transport = FakeTransport(RawResponse(500, status(500)), ok(CM))
    client = Client(transport, retry=FAST)
    with pytest.raises(ServerError):
        await client.create(CM)
    assert len(transport.calls) == 1
    transport = FakeTransport(RawResponse(429, status(429)), ok(CM))
    client = Client(transport, retry=FAST)
    assert await client.create(CM) == CM
    assert len(transport.calls) == 2


async def test_connection_errors() -> None:
    # Not sent: safe to retry even a create.
    transport = FakeTransport(APIConnectionError("refused", sent=False), ok(CM))
    assert await Client(transport, retry=FAST).create(CM) == CM
    # Sent and reset: a create may have happened; do not retry it...
    transport = FakeTransport(APIConnectionError("reset", sent=True), ok(CM))
    with pytest.raises(APIConnectionError):
        await Client(transport, retry=FAST).create(CM)
    # ...but a GET, an apply, a PUT and a merge patch are idempotent.
    transport = FakeTransport(APIConnectionError("reset"), RequestTimeoutError("slow"), ok(CM))
    assert await Client(transport, retry=FAST).apply(CM) == CM
    transport = FakeTransport(APIConnectionError("reset"), ok(CM))
    assert await Client(transport, retry=FAST).patch(CONFIGMAP, "x", {"data": {}}, "ns") == CM


async def test_json_patch_not_retried_on_5xx() -> None:
    transport = FakeTransport(RawResponse(503, status(503)), ok(CM))
    with pytest.raises(ServerError):
        await Client(transport, retry=FAST).patch(CONFIGMAP, "x", [{"op": "add", "path": "/data/b", "value": "2"}],
                                                  "ns", patch_type="json")
    assert transport.calls[0]["headers"]["Content-Type"] == "application/json-patch+json"


async def test_retry_after_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("asyncio.sleep", fake_sleep)
    transport = FakeTransport(RawResponse(429, status(429), {"Retry-After": "7"}), ok(CM))
    client = Client(transport, retry=RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02))
    assert await client.get(CONFIGMAP, "x", "ns") == CM
    assert slept and slept[0] >= 7.0


async def test_list_paginates_and_fills_kind() -> None:
    page1 = {"metadata": {"resourceVersion": "10", "continue": "tok"},
             "items": [{"metadata": {"name": "a", "namespace": "ns"}}]}
    page2 = {"metadata": {"resourceVersion": "10"}, "items": [{"metadata": {"name": "b", "namespace": "ns"}}]}
    transport = FakeTransport(ok(page1), ok(page2))
    result = await Client(transport).list(CONFIGMAP, "ns", label_selector={"app": "x"}, page_size=1)
    assert [i["metadata"]["name"] for i in result.items] == ["a", "b"]
    assert result.resource_version == "10"
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in result.items)
    assert ("limit", "1") in transport.calls[0]["query"] and ("labelSelector", "app=x") in transport.calls[0]["query"]
    assert ("continue", "tok") in transport.calls[1]["query"]


async def test_delete_options_and_missing_ok() -> None:
    transport = FakeTransport(ok({}), RawResponse(404, status(404, "NotFound")), RawResponse(404, status(404)))
    client = Client(transport)
    await client.delete(CONFIGMAP, "x", "ns", propagation_policy="Foreground", uid="u1")
    body = json.loads(transport.calls[0]["body"])
    assert body["propagationPolicy"] == "Foreground" and body["preconditions"] == {"uid": "u1"}
    assert await client.delete(CONFIGMAP, "x", "ns", missing_ok=True) is None
    with pytest.raises(NotFoundError):
        await client.delete(CONFIGMAP, "x", "ns")


async def test_unknown_kind_needs_explicit_kind() -> None:
    client = Client(FakeTransport())
    with pytest.raises(LookupError):
        await client.create({"apiVersion": "nope/v9", "kind": "Nothing", "metadata": {"name": "x"}})


async def test_nan_is_refused_before_sending() -> None:
    transport = FakeTransport(ok(CM))
    client = Client(transport)
    with pytest.raises(ValueError):
        await client.create({**CM, "data": {"x": float("nan")}}, kind=CONFIGMAP)
    assert transport.calls == []
