"""Typed API errors: one class per status a caller reacts to differently.

Callers branch on the class (``except NotFoundError``), never on numbers, and
the retry policy decides what is safe to retry from the class alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "AlreadyExistsError",
    "ConflictError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "NotFoundError",
    "RequestTimeoutError",
    "ServerError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "error_from_response",
]


class APIError(Exception):
    """An error answered by (or on the way to) the Kubernetes API server."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "",
                 details: Mapping[str, Any] | None = None, body: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.details: Mapping[str, Any] = details or {}
        self.body: Mapping[str, Any] = body or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, reason={self.reason!r}, message={self.message!r})"


class UnauthorizedError(APIError):
    """401: the credentials are missing or wrong."""


class ForbiddenError(APIError):
    """403: RBAC does not allow the request."""


class NotFoundError(APIError):
    """404: the object (or its namespace, or the kind) does not exist."""


class ConflictError(APIError):
    """409: the resourceVersion is stale, or a server-side-apply field conflict."""


class AlreadyExistsError(ConflictError):
    """409 with reason AlreadyExists: a create found the name taken."""


class GoneError(APIError):
    """410: the resourceVersion asked for is older than etcd keeps (an informer re-lists)."""


class InvalidError(APIError):
    """422: the object fails validation; ``causes`` lists the fields."""

    @property
    def causes(self) -> list[dict[str, Any]]:
        causes = self.details.get("causes") or []
        return [dict(cause) for cause in causes]


class TooManyRequestsError(APIError):
    """429: throttled; ``retry_after`` is what the server asked us to wait (seconds)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the server (or something between) failed; ``retry_after`` when it said so."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class APIConnectionError(APIError):
    """The request did not get an answer: connection refused or reset.

    ``sent`` is False when the connection failed before the request went out,
    which makes even a non-idempotent request safe to retry.
    """

    def __init__(self, message: str, *, sent: bool = True, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.sent = sent


class RequestTimeoutError(APIError, TimeoutError):
    """Our client-side timeout fired (every call has one), or a 504 from the server."""


def _parse_retry_after(headers: Mapping[str, str]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:  # an HTTP date: rare from kube-apiserver, treat as "soon"
                return 1.0
    return None


def error_from_response(status: int, body: bytes | Mapping[str, Any] | None,
                        headers: Mapping[str, str] | None = None) -> APIError:
    """Map an HTTP error answer (a ``metav1.Status`` body, usually) to its typed error."""
    headers = headers or {}
    parsed: Mapping[str, Any] = {}
    if isinstance(body, Mapping):
        parsed = body
    elif body:
        try:
            loaded = json.loads(body)
            if isinstance(loaded, dict):
                parsed = loaded
        except ValueError:
            parsed = {"message": body[:500].decode(errors="replace")}
    message = str(parsed.get("message") or f"HTTP {status}")
    reason = str(parsed.get("reason") or "")
    details = parsed.get("details") or {}
    code = int(parsed.get("code") or status)
    kwargs: dict[str, Any] = {"status": code, "reason": reason, "details": details, "body": parsed}
    retry_after = _parse_retry_after(headers)
    if retry_after is None and isinstance(details, Mapping) and details.get("retryAfterSeconds"):
        retry_after = float(details["retryAfterSeconds"])
    if code == 401:
        return UnauthorizedError(message, **kwargs)
    if code == 403:
        return ForbiddenError(message, **kwargs)
    if code == 404:
        return NotFoundError(message, **kwargs)
    if code == 409:
        if reason == "AlreadyExists":
            return AlreadyExistsError(message, **kwargs)
        return ConflictError(message, **kwargs)
    if code == 410 or reason in ("Expired", "Gone"):
        return GoneError(message, **kwargs)
    if code == 422:
        return InvalidError(message, **kwargs)
    if code == 429:
        return TooManyRequestsError(message, retry_after=retry_after, **kwargs)
    if code == 504:
        return RequestTimeoutError(message, **kwargs)
    if code >= 500:
        return ServerError(message, retry_after=retry_after, **kwargs)
    return APIError(message, **kwargs)
