"""Keyword arguments for the Azure SDK clients: retries, timeouts, LRO poll interval, TLS trust.

Retrying is azure-core's ``AsyncRetryPolicy``, configured rather than rewritten:
it retries 408/429/500/502/503/504 and dropped connections with exponential
backoff, and when the answer carries ``Retry-After`` it waits exactly that long.
Long-running operations are polled by ``AsyncARMPolling``, which also sleeps for
the ``Retry-After`` of each status answer (``polling_interval`` only when there is
none), with ``asyncio.sleep``: nothing blocks the event loop.
"""

from __future__ import annotations

from typing import Any

from kaito_provisioner_aks.settings import AKSSettings

__all__ = ["client_kwargs"]


def client_kwargs(settings: AKSSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "retry_total": settings.arm_retry_total,
        "retry_status": settings.arm_retry_total,
        "retry_connect": settings.arm_retry_total,
        "retry_read": settings.arm_retry_total,
        "retry_backoff_factor": settings.arm_retry_backoff_factor,
        "retry_backoff_max": settings.arm_retry_backoff_max,
        "polling_interval": settings.aks_poll_interval_seconds,
        "connection_timeout": 30,
        "read_timeout": settings.arm_request_timeout_seconds,
        "user_agent": "kaito-provisioner-aks",
    }
    if settings.arm_ca_bundle is not None:
        kwargs["connection_verify"] = str(settings.arm_ca_bundle)
    return kwargs
