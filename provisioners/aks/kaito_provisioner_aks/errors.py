"""Turn ARM failures into kaito-core's typed provisioner errors.

Transient failures (429, 5xx, dropped connections) are retried inside the Azure
SDK pipeline by azure-core's ``AsyncRetryPolicy``, which honours ``Retry-After``
(see :func:`kaito_provisioner_aks.clients.client_kwargs`); what still fails after
those retries ends here as a :class:`RetryableError`.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from kaito_core.provisioning import (
    InstanceTypeUnavailableError,
    InsufficientCapacityError,
    ProvisionerError,
    QuotaExceededError,
    RetryableError,
)

__all__ = [
    "CAPACITY_CODES",
    "QUOTA_CODES",
    "UNAVAILABLE_CODES",
    "AuthenticationFailedError",
    "arm_error_code",
    "is_operation_in_progress",
    "map_arm_error",
    "parse_retry_after",
]

UNAVAILABLE_CODES = frozenset({
    "skunotavailable", "skunotsupported", "invalidvmsize", "vmsizenotsupported", "notavailableforsubscription",
    "vmsizenotavailable",
})
CAPACITY_CODES = frozenset({
    "allocationfailed", "zonalallocationfailed", "overconstrainedallocationrequest",
    "overconstrainedzonalallocationrequest", "skunotavailableforcapacity",
})
QUOTA_CODES = frozenset({
    "quotaexceeded", "insufficientvcpuquota", "operationnotallowedquota", "errcode_insufficientvcpuquota",
    "publicipcountlimitreached",
})
_IN_PROGRESS_CODES = frozenset({"anotheroperationinprogress", "operationinprogress", "agentpooloperationinprogress"})


class AuthenticationFailedError(ProvisionerError):
    """ARM refused the credentials (wrong identity, missing role assignment, expired federation)."""

    reason = "AuthenticationFailed"
    retry_after = 120.0


def arm_error_code(exc: HttpResponseError) -> str:
    """The ARM error code (``error.code``, or the innermost detail's), '' when there is none."""
    error = exc.error
    if error is None:
        return ""
    code = error.code or ""
    # ARM wraps the real reason of a failed deployment in details (e.g. OperationNotAllowed > QuotaExceeded).
    for detail in error.details or []:
        if detail.code and detail.code.lower() in UNAVAILABLE_CODES | CAPACITY_CODES | QUOTA_CODES:
            return str(detail.code)
    return str(code)


def _message(exc: HttpResponseError) -> str:
    if exc.error is not None and exc.error.message:
        return str(exc.error.message)
    return str(exc.message or exc)


def is_operation_in_progress(exc: HttpResponseError) -> bool:
    """True for AKS's "another operation is in progress" answer (a second PUT while the first runs)."""
    code = arm_error_code(exc).lower()
    if code in _IN_PROGRESS_CODES:
        return True
    text = _message(exc).lower()
    return code in ("operationnotallowed", "conflict", "") and "in progress" in text


def parse_retry_after(value: str) -> float | None:
    """Seconds from a ``Retry-After`` value (seconds, or an HTTP date); None when unreadable."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retry_after(exc: HttpResponseError, default: float) -> float:
    headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
    value = headers.get("Retry-After")
    if value and (seconds := parse_retry_after(value)) is not None:
        return seconds
    return default


def map_arm_error(exc: AzureError, *, action: str) -> ProvisionerError:
    """The typed error for an ARM failure; ``action`` says what we were doing, for the message."""
    if isinstance(exc, ClientAuthenticationError):
        return AuthenticationFailedError(
            f"{action}: Azure refused the credentials ({exc.message}); check the identity's role assignment "
            "(Contributor on the cluster's resource group) and the workload-identity federation")
    if isinstance(exc, HttpResponseError):
        code = arm_error_code(exc)
        low = code.lower()
        text = _message(exc)
        status = exc.status_code or 0
        if low in UNAVAILABLE_CODES:
            return InstanceTypeUnavailableError(f"{action}: {code}: {text}")
        if low in CAPACITY_CODES:
            return InsufficientCapacityError(f"{action}: {code}: {text}; Azure has no capacity for it now, "
                                             "retrying later (or pick another size/region)")
        if low in QUOTA_CODES or (low == "operationnotallowed" and "quota" in text.lower()):
            return QuotaExceededError(f"{action}: {code}: {text}; request a quota increase for the VM family")
        if status == 429 or status >= 500 or status in (408, 0):
            return RetryableError(f"{action}: ARM answered {status} {code} after retries: {text}",
                                  after=_retry_after(exc, 30.0))
        if status in (401, 403):
            return AuthenticationFailedError(f"{action}: {status} {code}: {text}; check the identity's role "
                                             "assignments on the cluster's resource group")
        return ProvisionerError(f"{action}: ARM answered {status} {code}: {text}")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return RetryableError(f"{action}: could not reach ARM after retries: {exc.message}", after=15.0)
    return RetryableError(f"{action}: {type(exc).__name__}: {exc}", after=15.0)
