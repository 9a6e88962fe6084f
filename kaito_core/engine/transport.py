"""The raw HTTP layer under :class:`~kaito_core.engine.client.Client`, swappable in tests.

A transport sends one request and answers status, headers and bytes; it never
interprets Kubernetes semantics (errors, retries: the client does that). The
default one rides on the aiohttp session a ``kubernetes_asyncio`` ApiClient
already holds, so TLS, client certificates and bearer tokens come from the
usual kubeconfig loading (:mod:`kaito_core.engine.kubeconfig`), while we skip the generated API
and models entirely, at import too.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from kaito_core.engine.errors import APIConnectionError, RequestTimeoutError
from kaito_core.engine.kubeconfig import load_configuration, new_api_client

__all__ = ["ApiClientTransport", "RawResponse", "SendGate", "StreamResponse", "Transport", "send_gate_tracing"]

Query = Sequence[tuple[str, str]]


@dataclass(slots=True)
class RawResponse:
    """One complete HTTP answer."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class StreamResponse(Protocol):
    """A streaming answer (a watch): the status first, then newline-delimited lines."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def lines(self) -> AsyncIterator[bytes]: ...


class Transport(Protocol):
    """What the client needs from HTTP. Implement it to fake the API server in a unit test.

    ``before_send``, when given, is called as late as the transport can before the first byte of
    the request leaves (after the connection is taken from the pool or made); when it raises, the
    request is not sent and that exception comes out of ``request``. A transport that cannot do
    better calls it first thing.
    """

    async def request(self, method: str, path: str, *, query: Query = (),
                      headers: Mapping[str, str] | None = None, body: bytes | None = None,
                      timeout: float | None = None,
                      before_send: Callable[[], None] | None = None) -> RawResponse: ...

    def stream(self, path: str, *, query: Query = (), headers: Mapping[str, str] | None = None,
               read_timeout: float | None = None,
               connect_timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[StreamResponse]:
        ...


class _AiohttpStream:
    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = dict(response.headers)

    async def read(self) -> bytes:
        return await self._response.read()

    async def lines(self) -> AsyncIterator[bytes]:
        # Split chunks ourselves: aiohttp's readline() refuses lines above its
        # buffer limit, and one watch event can carry a 1.5 MiB object.
        buffer = b""
        try:
            async for chunk in self._response.content.iter_any():
                buffer += chunk
                while True:
                    newline = buffer.find(b"\n")
                    if newline < 0:
                        break
                    line, buffer = buffer[:newline], buffer[newline + 1:]
                    if line.strip():
                        yield line
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise APIConnectionError(f"watch stream broke: {exc}") from exc
        except TimeoutError as exc:
            raise RequestTimeoutError("watch stream read timed out") from exc
        if buffer.strip():
            yield buffer


class SendGate:
    """One request's ``before_send``, run from aiohttp's trace hooks right before the headers and
    each body chunk are written, with nothing awaited between the check and the socket write:
    a process stopped (SIGSTOP, a frozen VM) while it waits for a pooled connection or a TLS
    handshake checks again when it runs on, instead of sending a write decided long before.

    Any aiohttp session can use it: add :func:`send_gate_tracing` to its ``trace_configs`` and pass
    the gate as ``trace_request_ctx``; ``refused`` holds what the check raised (aiohttp wraps an
    exception from a body hook in a connection error)."""

    __slots__ = ("check", "refused")

    def __init__(self, check: Callable[[], None]):
        self.check = check
        self.refused: BaseException | None = None

    def run(self) -> None:
        try:
            self.check()
        except BaseException as exc:
            self.refused = exc
            raise


async def _gate_hook(_session: aiohttp.ClientSession, context: Any, _params: Any) -> None:
    gate = context.trace_request_ctx
    if isinstance(gate, SendGate):
        gate.run()


def send_gate_tracing() -> aiohttp.TraceConfig:
    """The trace hooks that run a request's :class:`SendGate` (one per session)."""
    config = aiohttp.TraceConfig()
    config.on_request_headers_sent.append(_gate_hook)  # awaited before the headers are written
    config.on_request_chunk_sent.append(_gate_hook)  # awaited before each body chunk is written
    config.freeze()
    return config


#: The read buffer each TLS connection gets (asyncio's ``SSLProtocol.max_size``; 256 KiB by default).
TLS_READ_BUFFER = 64 * 1024


def _smaller_tls_read_buffers() -> None:
    """asyncio gives every TLS connection a zero-filled read buffer of ``SSLProtocol.max_size``
    (256 KiB) the moment it opens it: a pool of 64 connections to the API server is 16 MiB of
    resident memory for buffers that receive a few 16 KiB TLS records at a time. 64 KiB still
    takes four records per read. Process-wide (asyncio has no per-connection knob); only lowered."""
    asyncio.sslproto.SSLProtocol.max_size = min(asyncio.sslproto.SSLProtocol.max_size, TLS_READ_BUFFER)


class ApiClientTransport:
    """HTTP through the aiohttp session of a ``kubernetes_asyncio.client.ApiClient``."""

    def __init__(self, api_client: Any, *, owns_client: bool = False):
        _smaller_tls_read_buffers()
        self._api = api_client
        self._owns_client = owns_client
        self._gated = False
        configuration = api_client.configuration
        self._host: str = configuration.host.rstrip("/")
        self._server_hostname: str | None = getattr(configuration, "tls_server_name", None)

    @classmethod
    async def from_kubeconfig(cls, path: str | Path | None = None, *, context: str | None = None,
                              pool_size: int = 64) -> ApiClientTransport:
        """Load a kubeconfig (or the in-cluster service account when there is none)."""
        configuration = await load_configuration(path, context=context, pool_size=pool_size)
        return cls(new_api_client(configuration), owns_client=True)

    @property
    def session(self) -> aiohttp.ClientSession:
        session: aiohttp.ClientSession = self._api.rest_client.pool_manager
        return session

    async def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "kaito-core"}
        # Bearer tokens may rotate (exec plugins, projected tokens): ask every time.
        auth = await self._api.configuration.auth_settings()
        for setting in auth.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        if extra:
            headers.update(extra)
        return headers

    def _kwargs(self) -> dict[str, Any]:
        return {"server_hostname": self._server_hostname} if self._server_hostname else {}

    def _gate(self, before_send: Callable[[], None] | None) -> SendGate | None:
        if before_send is None:
            return None
        if not self._gated:
            # The session belongs to the ApiClient and is made lazily: add our hooks once, here.
            self.session.trace_configs.append(send_gate_tracing())
            self._gated = True
        return SendGate(before_send)

    async def request(self, method: str, path: str, *, query: Query = (),
                      headers: Mapping[str, str] | None = None, body: bytes | None = None,
                      timeout: float | None = None,
                      before_send: Callable[[], None] | None = None) -> RawResponse:
        all_headers = await self._headers(headers)
        gate = self._gate(before_send)
        try:
            async with self.session.request(
                method, self._host + path, params=list(query), headers=all_headers, data=body,
                timeout=aiohttp.ClientTimeout(total=timeout), trace_request_ctx=gate, **self._kwargs(),
            ) as response:
                data = await response.read()
                return RawResponse(response.status, data, dict(response.headers))
        except aiohttp.ClientConnectorError as exc:
            raise APIConnectionError(f"{method} {path}: {exc}", sent=False) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
            if gate is not None and gate.refused is not None:
                # aiohttp wraps what a body hook raised; the caller wants the refusal itself.
                raise gate.refused from None
            raise APIConnectionError(f"{method} {path}: {exc}") from exc
        except TimeoutError as exc:
            raise RequestTimeoutError(f"{method} {path}: no answer within {timeout}s") from exc

    @contextlib.asynccontextmanager
    async def stream(self, path: str, *, query: Query = (), headers: Mapping[str, str] | None = None,
                     read_timeout: float | None = None,
                     connect_timeout: float | None = None) -> AsyncIterator[StreamResponse]:
        all_headers = await self._headers(headers)
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_connect=connect_timeout,
                                        sock_read=read_timeout)
        try:
            response = await self.session.get(self._host + path, params=list(query), headers=all_headers,
                                               timeout=timeout, **self._kwargs())
        except aiohttp.ClientConnectorError as exc:
            raise APIConnectionError(f"GET {path}: {exc}", sent=False) from exc
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise APIConnectionError(f"GET {path}: {exc}") from exc
        except TimeoutError as exc:
            raise RequestTimeoutError(f"GET {path}: no answer within {connect_timeout}s") from exc
        try:
            yield _AiohttpStream(response)
        finally:
            response.close()

    async def close(self) -> None:
        if self._owns_client:
            await self._api.close()
            # aiohttp wants a moment to close the TLS transports cleanly.
            await asyncio.sleep(0)
