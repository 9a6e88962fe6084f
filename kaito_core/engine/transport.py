"""The raw HTTP layer under :class:`~kaito_core.engine.client.Client`, swappable in tests.

A transport sends one request and answers status, headers and bytes; it never
interprets Kubernetes semantics (errors, retries: the client does that). The
default one rides on the aiohttp session a ``kubernetes_asyncio`` ApiClient
already holds, so TLS, client certificates and bearer tokens come from the
usual kubeconfig loading, while we skip the generated models entirely.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from kaito_core.engine.errors import APIConnectionError, RequestTimeoutError

__all__ = ["ApiClientTransport", "RawResponse", "StreamResponse", "Transport"]

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
    """What the client needs from HTTP. Implement it to fake the API server in a unit test."""

    async def request(self, method: str, path: str, *, query: Query = (),
                      headers: Mapping[str, str] | None = None, body: bytes | None = None,
                      timeout: float | None = None) -> RawResponse: ...

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


class ApiClientTransport:
    """HTTP through the aiohttp session of a ``kubernetes_asyncio.client.ApiClient``."""

    def __init__(self, api_client: Any, *, owns_client: bool = False):
        self._api = api_client
        self._owns_client = owns_client
        configuration = api_client.configuration
        self._host: str = configuration.host.rstrip("/")
        self._server_hostname: str | None = getattr(configuration, "tls_server_name", None)

    @classmethod
    async def from_kubeconfig(cls, path: str | Path | None = None, *, context: str | None = None,
                              pool_size: int = 64) -> ApiClientTransport:
        """Load a kubeconfig (or the in-cluster service account when there is none)."""
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        configuration.connection_pool_maxsize = pool_size
        try:
            await config.load_kube_config(config_file=str(path) if path else None, context=context,
                                          client_configuration=configuration)
        except config.ConfigException:
            if path is not None:
                raise
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(client.ApiClient(configuration), owns_client=True)

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

    async def request(self, method: str, path: str, *, query: Query = (),
                      headers: Mapping[str, str] | None = None, body: bytes | None = None,
                      timeout: float | None = None) -> RawResponse:
        all_headers = await self._headers(headers)
        try:
            async with self.session.request(
                method, self._host + path, params=list(query), headers=all_headers, data=body,
                timeout=aiohttp.ClientTimeout(total=timeout), **self._kwargs(),
            ) as response:
                data = await response.read()
                return RawResponse(response.status, data, dict(response.headers))
        except aiohttp.ClientConnectorError as exc:
            raise APIConnectionError(f"{method} {path}: {exc}", sent=False) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
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
