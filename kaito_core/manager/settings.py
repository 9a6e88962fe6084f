"""Operator settings: what ``kaito controller`` (and ``kaito up``) run with.

Every field reads from the environment too (prefix ``KAITO_``, nested with
``__``, e.g. ``KAITO_PROVISIONER=aks``, ``KAITO_WEBHOOK__PORT=9443``); command
line flags override the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_core.controllers.machine.settings import MachineControllerSettings
from kaito_core.controllers.workspace.settings import WorkspaceSettings
from kaito_core.engine.settings import ManagerSettings

__all__ = ["OperatorSettings", "WebhookSettings"]


class WebhookSettings(BaseModel):
    """The validating admission webhook the operator serves."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    enabled: bool = True
    """Serve the webhook (the reconciler validates again either way)."""
    port: int = 9443
    """HTTPS port; 0 picks a free one (local runs)."""
    bind_address: str = "0.0.0.0"
    """Address the HTTPS server listens on."""
    service: str | None = None
    """In-cluster Service name the apiserver calls (the chart sets it); None: a local run reached by URL."""
    host: str = "127.0.0.1"
    """Host the apiserver dials for a local run (URL form)."""
    secret_name: str = "kaito-core-webhook-cert"
    """Secret that holds the self-signed CA and serving certificate shared by all replicas."""
    configuration_name: str | None = "validation.workspace.kaito.sh"
    """ValidatingWebhookConfiguration whose caBundle the operator keeps current (None: leave it alone)."""
    cert_dir: Path | None = None
    """Where certificates are read from. Set with cert-manager (its mounted Secret); otherwise the
    operator issues its own into a temporary folder."""
    register_configuration: bool = False
    """Create the ValidatingWebhookConfiguration itself (local runs; in cluster the chart does)."""


class OperatorSettings(BaseSettings):
    """Everything the operator needs to run."""

    model_config = SettingsConfigDict(env_prefix="KAITO_", env_nested_delimiter="__",
                                      use_attribute_docstrings=True, extra="forbid")

    namespace: str = "kaito-system"
    """The operator's own namespace: its Lease, its webhook Secret; part of its install identity."""
    cluster_id: str | None = None
    """This cluster's id in the install identity stamped on every Machine, Node and agent pool the
    operator makes (the leak collector deletes only what carries it). None: the UID of the
    ``kube-system`` namespace. Set it only where the operator may not read that namespace; never
    change it on a running install (what it made before would no longer be collected)."""
    provisioner: str = "simulated"
    """The provisioner plugin (entry point in ``kaito.provisioners``) that turns Machines into nodes."""
    provisioner_settings: dict[str, Any] = Field(default_factory=dict)
    """Settings handed to the plugin (validated by its own settings model)."""
    manager: ManagerSettings = Field(default_factory=ManagerSettings)
    """Engine settings: leader election, probes/metrics port, timeouts."""
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    """Admission webhook settings."""
    workspace: WorkspaceSettings = Field(default_factory=WorkspaceSettings)
    """Workspace reconciler settings (images, workers, ...)."""
    machine: MachineControllerSettings = Field(default_factory=MachineControllerSettings)
    """Machine reconciler settings (launch/registration timeouts, garbage collection, ...)."""
    log_format: Literal["json", "console"] = "json"
    """Structured logs as JSON lines (in cluster) or coloured console lines."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level logged."""
