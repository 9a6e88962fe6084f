"""What bounds a request before it reaches the model: body size, a bearer token, the generation queue.

* :class:`BodyLimit` (ASGI): a body over ``max_request_bytes`` is a 413 ``request_too_large``, refused from
  its ``Content-Length`` before a byte is read, or as soon as a chunked body grows past it.
* :class:`BearerAuth` (ASGI) with :class:`ApiKeys`: with a token configured, every path but the probes'
  (``/health``, ``/metrics``) needs ``Authorization: Bearer <token>``, else a 401 ``invalid_api_key``.
* :class:`Admission`: at most ``capacity`` generations admitted at once (running or waiting for the model);
  one more is a 429 ``server_busy`` at once, never an unbounded wait.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from types import TracebackType

from fastapi import HTTPException
from prometheus_client import Gauge
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import RequestError, error_response

log = logging.getLogger("kaito.inference.server")

__all__ = ["OPEN_PATHS", "Admission", "ApiKeys", "BearerAuth", "BodyLimit", "Slot"]

#: Paths answered without a token: the kubelet's probes and Prometheus' scrape.
OPEN_PATHS = frozenset({"/health", "/metrics"})


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with a 413 (raised where the route reads its body)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(
            413, f"request body is larger than this server's limit of {self.max_bytes} bytes (max_request_bytes)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        over = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            if over:
                raise self._too_large()
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited, send)


class ApiKeys:
    """The bearer tokens a request may send: the file's (re-read when it changes) and the environment's."""

    def __init__(self, file: str | None, env_value: str | None = None) -> None:
        self._file = Path(file) if file else None
        self._env = (env_value or "").strip() or None
        self._file_key: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        if self._file is not None:
            self._reload()
            if self._file_key is None:
                raise ValueError(f"api_key_file {self._file}: missing, unreadable or empty")

    @property
    def enabled(self) -> bool:
        return self._file is not None or self._env is not None

    def _reload(self) -> None:
        assert self._file is not None
        try:
            st = self._file.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            key = self._file.read_text().strip()
        except OSError as exc:  # a Secret being rotated: keep the last good token
            log.warning("cannot read api_key_file %s: %s", self._file, exc)
            return
        if key:
            self._file_key, self._stamp = key, stamp

    def accepts(self, token: str) -> bool:
        if self._file is not None:
            self._reload()
        given = token.encode()
        ok = False
        for key in (self._file_key, self._env):
            if key is not None:
                ok |= hmac.compare_digest(key.encode(), given)
        return ok


class BearerAuth:
    """With keys configured, answer 401 to a request without a good bearer token (probes' paths excepted)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys.enabled and scope["path"] not in OPEN_PATHS:
            scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not self.keys.accepts(token.strip()):
                response = error_response(
                    401,
                    "missing or wrong API key: send the server's token as 'Authorization: Bearer <token>'",
                    "invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Admission:
    """A bounded count of admitted generations; :meth:`admit` is a 429 when it is full."""

    def __init__(self, capacity: int, gauge: Gauge | None = None) -> None:
        self.capacity, self.pending, self._gauge = capacity, 0, gauge

    def admit(self) -> Slot:
        if self.pending >= self.capacity:
            raise RequestError(
                429,
                f"server busy: {self.capacity} generations are already running or waiting "
                "(max_pending_requests); retry later",
                "server_busy",
                "server_error",
            )
        self.pending += 1
        if self._gauge is not None:
            self._gauge.set(self.pending)
        return Slot(self)

    def _release(self) -> None:
        self.pending -= 1
        if self._gauge is not None:
            self._gauge.set(self.pending)


class Slot:
    """One admitted generation: released once, when its ``with`` block ends unless handed to a stream."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission
        self._handed_over = False

    def release(self) -> None:
        if self._admission is not None:
            self._admission._release()
            self._admission = None

    def hand_over(self) -> Slot:
        """Keep the slot past the ``with`` block (a streamed response releases it when it ends)."""
        self._handed_over = True
        return self

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._handed_over or exc is not None:
            self.release()
