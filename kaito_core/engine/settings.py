"""Manager settings (pydantic): every knob documented where it is declared."""

from __future__ import annotations

import os
import socket
import uuid

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["LeaderElectionSettings", "ManagerSettings"]


def _default_identity() -> str:
    # Pod name (hostname) plus a random suffix: two processes on one host never share an identity.
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderElectionSettings(BaseModel):
    """Lease-based leader election (coordination.k8s.io/v1), client-go's defaults."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    enabled: bool = False
    """Elect a leader; only the leader runs controllers (standbys keep warm caches)."""
    lease_name: str = "kaito-core-leader"
    """Name of the Lease object all replicas compete for."""
    lease_namespace: str = "default"
    """Namespace of the Lease (usually the operator's own namespace)."""
    identity: str = Field(default_factory=_default_identity)
    """This replica's name in ``spec.holderIdentity``; must be unique among replicas."""
    lease_duration: float = 15.0
    """Seconds a standby waits, after it last saw the lease change, before taking it over."""
    renew_deadline: float = 10.0
    """Seconds the leader keeps trying to renew before it gives up leadership (< lease_duration)."""
    retry_period: float = 2.0
    """Seconds between attempts to acquire or renew."""
    release_on_cancel: bool = True
    """On a clean shutdown, hand the lease back at once so a standby need not wait it out."""

    @model_validator(mode="after")
    def _check(self) -> LeaderElectionSettings:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        return self


class ManagerSettings(BaseModel):
    """How a Manager runs its caches, controllers, probes and election."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    name: str = "kaito-core"
    """Component name: the source of Events and the logger name."""
    namespace: str | None = None
    """Watch only this namespace (None: the whole cluster)."""
    field_manager: str = "kaito-core"
    """Field manager for server-side apply and other writes."""
    request_timeout: float = 10.0
    """Seconds allowed for any single API call."""
    bind_address: str = "0.0.0.0"
    """Address for the /healthz, /readyz and /metrics server."""
    http_port: int | None = 8080
    """Port of that server; 0 picks a free one, None disables it."""
    cache_sync_timeout: float = 120.0
    """Seconds to wait for the first LIST of every watched kind before giving up."""
    graceful_shutdown_timeout: float = 30.0
    """Seconds in-flight reconciles may take to finish on shutdown."""
    resync_period: float | None = None
    """Re-deliver every cached object as an update this often (None: never; level-based needs none)."""
    handle_signals: bool = True
    """Stop cleanly on SIGTERM/SIGINT (when running in the main thread)."""
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)
    """Leader election settings."""
