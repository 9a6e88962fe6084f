"""A transport that answers from a function, for testing code that uses :class:`~kaito_core.engine.Client`.

As httpx's ``MockTransport``: hand it a function from request to response and give it to a
client; nothing touches the network::

    def handler(request: TransportRequest) -> RawResponse:
        if request.method == "GET" and request.path == "/api/v1/namespaces/ns/configmaps/x":
            return json_response({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
        return json_response(not_found(), status=404)

    client = Client(MockTransport(handler))

The handler may be ``async``, and may raise (an :class:`~kaito_core.engine.APIConnectionError`, say)
to play a dropped connection. Watches are answered by ``stream_handler``: the lines it returns are
sent and then the stream stays open without sending more (a quiet API server); without one, a watch
fails as a broken connection would. ``requests`` keeps every request in order, for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito_core.engine.errors import APIConnectionError
from kaito_core.engine.transport import RawResponse, StreamResponse

__all__ = ["MockTransport", "TransportRequest", "json_response", "not_found"]


@dataclass(frozen=True)
class TransportRequest:
    """One request as the client sent it."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout: float | None = None

    def json(self) -> Any:
        """The body, decoded (None when there is none)."""
        return json.loads(self.body) if self.body else None

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``."""
        return next((value for key, value in self.query if key == name), None)


Handler = Callable[[TransportRequest], RawResponse | Awaitable[RawResponse]]
StreamHandler = Callable[[TransportRequest], Iterable[Mapping[str, Any]]]


def json_response(obj: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> RawResponse:
    """An answer carrying ``obj`` as JSON."""
    return RawResponse(status, json.dumps(obj).encode(), dict(headers or {}))


def not_found(message: str = "not found") -> dict[str, Any]:
    """The Status body the API server sends with a 404."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound",
            "message": message}


class _Stream:
    def __init__(self, lines: list[bytes]):
        self.status = 200
        self.headers: Mapping[str, str] = {}
        self._lines = lines

    async def read(self) -> bytes:
        return b"\n".join(self._lines)

    async def lines(self) -> AsyncIterator[bytes]:
        for line in self._lines:
            yield line
        await asyncio.Event().wait()  # then quiet, as a watch with nothing new is


class MockTransport:
    """A :class:`~kaito_core.engine.Transport` whose answers come from ``handler``."""

    def __init__(self, handler: Handler, *, stream_handler: StreamHandler | None = None):
        self.handler = handler
        self.stream_handler = stream_handler
        self.requests: list[TransportRequest] = []

    async def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                      headers: Mapping[str, str] | None = None, body: bytes | None = None,
                      timeout: float | None = None,
                      before_send: Callable[[], None] | None = None) -> RawResponse:
        if before_send is not None:
            before_send()  # nothing lies between "connection ready" and "bytes out" here
        request = TransportRequest(method, path, tuple(query), dict(headers or {}), body, timeout)
        self.requests.append(request)
        answer = self.handler(request)
        if isinstance(answer, Awaitable):
            answer = await answer
        return answer

    @contextlib.asynccontextmanager
    async def stream(self, path: str, *, query: Sequence[tuple[str, str]] = (),
                     headers: Mapping[str, str] | None = None, read_timeout: float | None = None,
                     connect_timeout: float | None = None) -> AsyncIterator[StreamResponse]:
        request = TransportRequest("GET", path, tuple(query), dict(headers or {}), None, read_timeout)
        self.requests.append(request)
        if self.stream_handler is None:
            raise APIConnectionError(f"MockTransport has no stream_handler for {path}")
        yield _Stream([json.dumps(dict(event)).encode() for event in self.stream_handler(request)])
