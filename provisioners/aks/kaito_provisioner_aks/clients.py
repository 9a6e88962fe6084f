"""Keyword arguments for the Azure SDK clients: retries, timeouts, LRO poll interval, TLS trust.

Retrying is azure-core's ``AsyncRetryPolicy``, configured rather than rewritten:
it retries 408/429/500/502/503/504 and dropped connections with exponential
backoff, and when the answer carries ``Retry-After`` it waits exactly that long.
Long-running operations are polled by ``AsyncARMPolling``, which also sleeps for
the ``Retry-After`` of each status answer (``polling_interval`` only when there is
none), with ``asyncio.sleep``: nothing blocks the event loop.

One exception: a ``PUT`` (the only ``PUT`` we send creates an agent pool) is not
sent again blindly. ARM may have carried it out and only the answer got lost (a
connection broken after the request went out, a read timeout, a 5xx), and a second
create of the same pool is what a careful provider never sends on a guess. Two
layers would replay it, both deeming ``PUT`` idempotent:

* azure-core's retry policy: :class:`NoBlindReplayRetryPolicy` retries a ``PUT``
  only when ARM answered 429 (throttled, so not carried out) or when the connection
  could not even be opened;
* aiohttp, which sends an idempotent request once more on the same call when the
  connection breaks (RFC 9112's retry of a persistent connection):
  :class:`NoReplayAioHttpTransport` turns that break into :class:`AnswerLostError`
  for a ``PUT``, which aiohttp does not replay.

The error then reaches the provisioner, which GETs the pool (its name is
deterministic) and adopts it, and sends the ``PUT`` again only once the GET shows
there is none (:meth:`kaito_provisioner_aks.AKSProvisioner.create`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from azure.core.exceptions import AzureError
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import AsyncRetryPolicy
from azure.core.pipeline.transport import AioHttpTransport

from kaito_core.engine.transport import SendGate, send_gate_tracing
from kaito_provisioner_aks.settings import AKSSettings

__all__ = [
    "NOT_REPLAYED_METHODS",
    "AnswerLostError",
    "NoBlindReplayRetryPolicy",
    "NoReplayAioHttpTransport",
    "client_kwargs",
    "never_sent",
]

#: Methods not sent again unless ARM answered 429 or the connection never opened: a create whose
#: answer was lost may have been carried out.
NOT_REPLAYED_METHODS = frozenset({"PUT"})


class AnswerLostError(aiohttp.ServerConnectionError):
    """The connection broke after a ``PUT`` was sent: ARM may or may not have carried it out.

    Not a ``ServerDisconnectedError``/``ClientOSError``, the two aiohttp replays an idempotent request on.
    """


def never_sent(error: BaseException | None) -> bool:
    """True when the request cannot have reached ARM: the connection (TCP, TLS) was never opened."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return True
        inner = getattr(error, "inner_exception", None)
        error = inner if isinstance(inner, BaseException) else error.__cause__
    return False


async def _no_replay(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
    try:
        return await handler(request)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
        raise  # never opened: nothing was sent
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        raise AnswerLostError(f"the connection broke after {request.method} {request.url.path} was sent "
                              f"({type(exc).__name__}: {exc}); not sent again") from exc


class NoReplayAioHttpTransport(AioHttpTransport):  # type: ignore[misc]  # lazily exported: Any to mypy
    """azure-core's aiohttp transport; a ``PUT`` is not replayed by aiohttp when the connection breaks.

    With ``write_fence`` (the leader's, from the ProvisionerContext) every ARM write (anything but
    GET/HEAD) asks it before the attempt and again as its bytes leave (:class:`SendGate`): a leader
    paused past its lease and resumed creates or deletes no agent pool; what the fence raises
    comes out of ``send`` as it is.
    """

    def __init__(self, *args: Any, write_fence: Callable[[str, str], None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.write_fence = write_fence
        self._gated = False

    async def open(self) -> None:
        await super().open()
        if self.session is not None and not self._gated:
            self.session.trace_configs.append(send_gate_tracing())
            self._gated = True

    async def send(self, request: Any, *, stream: bool = False, proxies: Any = None, **config: Any) -> Any:
        method = request.method.upper()
        if method in NOT_REPLAYED_METHODS:
            config.setdefault("middlewares", (_no_replay,))
        gate: SendGate | None = None
        if self.write_fence is not None and method not in ("GET", "HEAD"):
            path = urlsplit(request.url).path
            self.write_fence(method, path)
            await self.open()  # the session (and its trace hooks) before the gate is handed to it
            gate = SendGate(functools.partial(self.write_fence, method, path))
            config["trace_request_ctx"] = gate
        try:
            return await super().send(request, stream=stream, proxies=proxies, **config)
        except AzureError:
            if gate is not None and gate.refused is not None:
                raise gate.refused from None
            raise


class NoBlindReplayRetryPolicy(AsyncRetryPolicy[Any, Any]):
    """azure-core's ``AsyncRetryPolicy``, but a ``PUT`` is retried only after a 429 or a connection that
    never opened."""

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        if response.http_request.method.upper() in NOT_REPLAYED_METHODS \
                and response.http_response.status_code != 429:
            return False
        return bool(super().is_retry(settings, response))

    def increment(self, settings: dict[str, Any], response: Any = None, error: Exception | None = None) -> bool:
        request = getattr(response, "http_request", None)
        if (error is not None and request is not None and request.method.upper() in NOT_REPLAYED_METHODS
                and not never_sent(error)):
            return False
        return bool(super().increment(settings, response=response, error=error))


def client_kwargs(settings: AKSSettings, *, write_fence: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Keywords for one client (call it once per client: a policy and a transport belong to one pipeline).

    ``write_fence``: the leader's (see :class:`NoReplayAioHttpTransport`)."""
    retries: dict[str, Any] = {
        "retry_total": settings.arm_retry_total,
        "retry_status": settings.arm_retry_total,
        "retry_connect": settings.arm_retry_total,
        "retry_read": settings.arm_retry_total,
        "retry_backoff_factor": settings.arm_retry_backoff_factor,
        "retry_backoff_max": settings.arm_retry_backoff_max,
    }
    connection: dict[str, Any] = {
        "connection_timeout": 30,
        "read_timeout": settings.arm_request_timeout_seconds,
    }
    if settings.arm_ca_bundle is not None:
        connection["connection_verify"] = str(settings.arm_ca_bundle)
    return {
        **retries,
        **connection,
        "retry_policy": NoBlindReplayRetryPolicy(**retries),
        "transport": NoReplayAioHttpTransport(write_fence=write_fence, **connection),
        "polling_interval": settings.aks_poll_interval_seconds,
        "user_agent": "kaito-provisioner-aks",
    }
