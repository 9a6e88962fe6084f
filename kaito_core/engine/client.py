"""Client: typed verbs over raw REST for any kind, with a timeout and a safe retry policy.

Objects go in and come out as plain dicts (JSON), never generated models:
cheaper to parse, and a CRD needs nothing generated. Errors are typed
(:mod:`kaito_core.engine.errors`). Retries (tenacity) happen only where a
second attempt cannot do harm: a 429 (the server did nothing), and for
idempotent verbs also 5xx, timeouts and broken connections.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay

from kaito_core.engine.errors import (
    APIConnectionError,
    NotFoundError,
    RequestTimeoutError,
    ServerError,
    TooManyRequestsError,
    error_from_response,
)
from kaito_core.engine.resources import ResourceKind, kind_of, object_key
from kaito_core.engine.transport import RawResponse, Transport

__all__ = ["DEFAULT_FIELD_MANAGER", "Client", "ObjectList", "PatchType", "RetryPolicy", "WatchEvent"]

DEFAULT_FIELD_MANAGER = "kaito-core"
PatchType = Literal["merge", "json", "strategic"]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}
_APPLY_CONTENT_TYPE = "application/apply-patch+yaml"  # JSON is valid YAML


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry a request that failed in a retryable way."""

    attempts: int = 5
    """Total tries, the first included (1 disables retries)."""
    initial_backoff: float = 0.2
    """Seconds before the second try; doubles each time, with full jitter."""
    max_backoff: float = 10.0
    """Cap on one wait (a Retry-After from the server can ask for more, up to ``max_total``)."""
    max_total: float = 60.0
    """Give up once this many seconds have passed since the first try."""


@dataclass(slots=True)
class ObjectList:
    """One page of a LIST: items, the list's resourceVersion, and the continue token."""

    items: list[dict[str, Any]]
    resource_version: str
    continue_token: str | None = None


@dataclass(slots=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."""

    type: str
    object: dict[str, Any] = field(default_factory=dict)


def _is_retryable(exc: BaseException, idempotent: bool) -> bool:
    if isinstance(exc, TooManyRequestsError):
        return True
    if isinstance(exc, APIConnectionError):
        return idempotent or not exc.sent
    if isinstance(exc, ServerError | RequestTimeoutError):
        return idempotent
    return False


def _selector(value: str | Mapping[str, str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    return ",".join(f"{k}={v}" for k, v in sorted(value.items()))


class Client:
    """Typed verbs over any :class:`ResourceKind`; dicts in, dicts out.

    ``timeout`` bounds every call (seconds, per attempt); each verb takes its own.
    """

    def __init__(self, transport: Transport, *, field_manager: str = DEFAULT_FIELD_MANAGER,
                 timeout: float = 10.0, retry: RetryPolicy | None = None):
        self.transport = transport
        self.field_manager = field_manager
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.write_fence: Callable[[str, str], None] | None = None
        """Called with (method, path) before every attempt of anything but GET/HEAD, and again by the
        transport as the request's bytes leave (``before_send``); raises to
        stop the write. The Manager sets it under leader election: no write once the lease may be
        someone else's (a leader paused past its lease, then resumed)."""
        self.on_written: Callable[[ResourceKind, dict[str, Any]], None] | None = None
        """Called with what each create, update, apply and patch returned (the Manager passes it to
        its cache, so a reconciler reads its own writes); must be quick and must not raise."""

    # -- plumbing

    def _wait(self, state: RetryCallState) -> float:
        policy = self.retry
        backoff = min(policy.max_backoff, policy.initial_backoff * 2 ** (state.attempt_number - 1))
        wait = random.uniform(backoff / 2, backoff)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            # The server knows how busy it is: wait at least as long as it asked.
            wait = max(wait, float(retry_after))
        return wait

    async def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                      body: Any = None, content_type: str = "application/json",
                      timeout: float | None = None, idempotent: bool | None = None) -> Any:
        """Send one request (retrying where safe) and return the decoded JSON answer."""
        if idempotent is None:
            idempotent = method in ("GET", "PUT", "DELETE", "HEAD")
        data: bytes | None = None
        if body is not None:
            # allow_nan=False: NaN is not JSON; fail here rather than with the apiserver's parse error.
            data = body if isinstance(body, bytes) else json.dumps(body, allow_nan=False).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        per_try = self.timeout if timeout is None else timeout
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: _is_retryable(exc, bool(idempotent))),
            stop=stop_after_attempt(self.retry.attempts) | stop_after_delay(self.retry.max_total),
            wait=self._wait,
            reraise=True,
        )
        response: RawResponse | None = None
        async for attempt in retrying:
            with attempt:
                fence = self.write_fence if method not in ("GET", "HEAD") else None
                if fence is None:
                    response = await self.transport.request(method, path, query=query, headers=headers,
                                                            body=data, timeout=per_try)
                else:
                    fence(method, path)  # cheap early refusal, before anything is prepared
                    # ... and again as the bytes leave: a stop between here and the socket (waiting
                    # for a pooled connection, a TLS handshake) must not let a stale write out.
                    response = await self.transport.request(method, path, query=query, headers=headers,
                                                            body=data, timeout=per_try,
                                                            before_send=functools.partial(fence, method, path))
                if response.status >= 400:
                    raise error_from_response(response.status, response.body, response.headers)
        assert response is not None
        if not response.body:
            return None
        return json.loads(response.body)

    # -- reads

    async def get(self, kind: ResourceKind, name: str, namespace: str | None = None, *,
                  timeout: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", kind.path(namespace, name), timeout=timeout)
        return result

    async def get_or_none(self, kind: ResourceKind, name: str, namespace: str | None = None, *,
                          timeout: float | None = None) -> dict[str, Any] | None:
        try:
            return await self.get(kind, name, namespace, timeout=timeout)
        except NotFoundError:
            return None

    async def list_page(self, kind: ResourceKind, namespace: str | None = None, *,
                        label_selector: str | Mapping[str, str] | None = None,
                        field_selector: str | None = None, limit: int | None = None,
                        continue_token: str | None = None, resource_version: str | None = None,
                        timeout: float | None = None) -> ObjectList:
        """One page of a LIST (``limit``/``continue`` pagination)."""
        query: list[tuple[str, str]] = []
        if (selector := _selector(label_selector)) is not None:
            query.append(("labelSelector", selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if limit:
            query.append(("limit", str(limit)))
        if continue_token:
            query.append(("continue", continue_token))
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        body = await self.request("GET", kind.path(namespace), query=query, timeout=timeout)
        meta = body.get("metadata") or {}
        items: list[dict[str, Any]] = body.get("items") or []
        # A LIST leaves apiVersion/kind off its items; put them back so each item stands alone.
        for item in items:
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return ObjectList(items, str(meta.get("resourceVersion", "")), meta.get("continue") or None)

    async def list(self, kind: ResourceKind, namespace: str | None = None, *,
                   label_selector: str | Mapping[str, str] | None = None,
                   field_selector: str | None = None, page_size: int = 500,
                   timeout: float | None = None) -> ObjectList:
        """Every matching object, following ``continue`` tokens; one consistent snapshot."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.list_page(kind, namespace, label_selector=label_selector,
                                        field_selector=field_selector, limit=page_size,
                                        continue_token=token, timeout=timeout)
            items.extend(page.items)
            token = page.continue_token
            if not token:
                return ObjectList(items, page.resource_version)

    async def watch(self, kind: ResourceKind, namespace: str | None = None, *,
                    resource_version: str | None = None, label_selector: str | Mapping[str, str] | None = None,
                    field_selector: str | None = None, timeout_seconds: int = 300,
                    bookmarks: bool = True, connect_timeout: float | None = None) -> AsyncIterator[WatchEvent]:
        """Stream watch events (no retry here: the informer owns reconnects and re-lists)."""
        query: list[tuple[str, str]] = [("watch", "1"), ("timeoutSeconds", str(timeout_seconds))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        if (selector := _selector(label_selector)) is not None:
            query.append(("labelSelector", selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        # The server ends the watch after timeout_seconds; a silent socket for much
        # longer than that (bookmarks come about every minute) means a dead peer.
        async with self.transport.stream(kind.path(namespace), query=query,
                                         read_timeout=timeout_seconds + 30.0,
                                         connect_timeout=connect_timeout or self.timeout) as response:
            if response.status >= 400:
                raise error_from_response(response.status, await response.read(), response.headers)
            async for line in response.lines():
                event = json.loads(line)
                yield WatchEvent(str(event.get("type", "")), event.get("object") or {})

    # -- writes

    def _kind(self, obj: Mapping[str, Any], kind: ResourceKind | None) -> ResourceKind:
        return kind if kind is not None else kind_of(obj)

    def _written(self, kind: ResourceKind, result: Any) -> None:
        if self.on_written is not None and isinstance(result, dict) and result.get("metadata"):
            self.on_written(kind, result)

    async def create(self, obj: Mapping[str, Any], *, kind: ResourceKind | None = None,
                     namespace: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        kind = self._kind(obj, kind)
        ns = namespace or object_key(obj)[0]
        query = [("fieldManager", self.field_manager)]
        result: dict[str, Any] = await self.request("POST", kind.path(ns), query=query, body=dict(obj),
                                                    timeout=timeout, idempotent=False)
        self._written(kind, result)
        return result

    async def update(self, obj: Mapping[str, Any], *, kind: ResourceKind | None = None,
                     subresource: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """PUT the whole object; its ``metadata.resourceVersion`` guards against lost updates."""
        kind = self._kind(obj, kind)
        ns, name = object_key(obj)
        query = [("fieldManager", self.field_manager)]
        result: dict[str, Any] = await self.request("PUT", kind.path(ns, name, subresource), query=query,
                                                    body=dict(obj), timeout=timeout)
        self._written(kind, result)
        return result

    async def update_status(self, obj: Mapping[str, Any], *, kind: ResourceKind | None = None,
                            timeout: float | None = None) -> dict[str, Any]:
        return await self.update(obj, kind=kind, subresource="status", timeout=timeout)

    async def apply(self, obj: Mapping[str, Any], *, kind: ResourceKind | None = None, force: bool = False,
                    field_manager: str | None = None, subresource: str | None = None,
                    timeout: float | None = None) -> dict[str, Any]:
        """Server-side apply: send only the fields we own; the server merges and tracks ownership."""
        kind = self._kind(obj, kind)
        ns, name = object_key(obj)
        query = [("fieldManager", field_manager or self.field_manager)]
        if force:
            query.append(("force", "true"))
        body = dict(obj)
        body.setdefault("apiVersion", kind.api_version)
        body.setdefault("kind", kind.kind)
        result: dict[str, Any] = await self.request(
            "PATCH", kind.path(ns, name, subresource), query=query, body=body,
            content_type=_APPLY_CONTENT_TYPE, timeout=timeout, idempotent=True)
        self._written(kind, result)
        return result

    async def apply_status(self, obj: Mapping[str, Any], *, kind: ResourceKind | None = None,
                           force: bool = True, field_manager: str | None = None,
                           timeout: float | None = None) -> dict[str, Any]:
        return await self.apply(obj, kind=kind, force=force, field_manager=field_manager,
                                subresource="status", timeout=timeout)

    async def patch(self, kind: ResourceKind, name: str, patch: Any, namespace: str | None = None, *,
                    patch_type: PatchType = "merge", subresource: str | None = None,
                    timeout: float | None = None) -> dict[str, Any]:
        """A merge (default), JSON or strategic-merge patch. JSON patches are not retried on 5xx."""
        query = [("fieldManager", self.field_manager)]
        result: dict[str, Any] = await self.request(
            "PATCH", kind.path(namespace, name, subresource), query=query, body=patch,
            content_type=_PATCH_CONTENT_TYPES[patch_type], timeout=timeout, idempotent=patch_type != "json")
        self._written(kind, result)
        return result

    async def patch_status(self, kind: ResourceKind, name: str, patch: Any, namespace: str | None = None, *,
                           patch_type: PatchType = "merge", timeout: float | None = None) -> dict[str, Any]:
        return await self.patch(kind, name, patch, namespace, patch_type=patch_type, subresource="status",
                                timeout=timeout)

    async def delete(self, kind: ResourceKind, name: str, namespace: str | None = None, *,
                     propagation_policy: Literal["Foreground", "Background", "Orphan"] | None = None,
                     uid: str | None = None, resource_version: str | None = None,
                     grace_period_seconds: int | None = None, missing_ok: bool = False,
                     timeout: float | None = None) -> dict[str, Any] | None:
        """Delete; ``uid``/``resource_version`` make it conditional; ``missing_ok`` swallows 404."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if uid or resource_version:
            body["preconditions"] = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        try:
            result: dict[str, Any] | None = await self.request("DELETE", kind.path(namespace, name), body=body,
                                                               timeout=timeout)
            return result
        except NotFoundError:
            if missing_ok:
                return None
            raise

    async def close(self) -> None:
        close = getattr(self.transport, "close", None)
        if close is not None:
            await close()

