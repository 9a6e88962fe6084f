"""Settings of the AKS provisioner: environment variables (or a mapping handed to ``load_provisioner``).

The four required ones name the cluster the agent pools go into::

    ARM_SUBSCRIPTION_ID   the Azure subscription of the AKS cluster
    ARM_RESOURCE_GROUP    the resource group of the AKS cluster (not the MC_ node resource group)
    AZURE_CLUSTER_NAME    the AKS cluster's name
    LOCATION              the cluster's region, e.g. westus2

A missing one fails at start-up with one line per variable, saying what to set.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["REQUIRED_SETTINGS", "AKSSettings", "CredentialKind"]


class CredentialKind(StrEnum):
    """How the provisioner authenticates to Azure Resource Manager."""

    AUTO = "auto"
    """Workload identity when ``AZURE_FEDERATED_TOKEN_FILE`` is set, else ``DefaultAzureCredential``."""
    WORKLOAD_IDENTITY = "workload-identity"
    """``AZURE_CLIENT_ID`` + ``AZURE_TENANT_ID`` + ``AZURE_FEDERATED_TOKEN_FILE`` (AKS workload identity)."""
    MANAGED_IDENTITY = "managed-identity"
    """The kubelet/pod managed identity (``AZURE_CLIENT_ID`` picks a user-assigned one)."""
    DEFAULT = "default"
    """``azure.identity.aio.DefaultAzureCredential`` (environment, workload identity, managed identity, CLI...)."""


REQUIRED_SETTINGS: dict[str, str] = {
    "arm_subscription_id": "the Azure subscription ID of the AKS cluster",
    "arm_resource_group": "the resource group that holds the AKS cluster",
    "azure_cluster_name": "the name of the AKS cluster",
    "location": "the Azure region of the cluster, e.g. westus2",
}


class AKSSettings(BaseSettings):
    """Settings of the ``aks`` provisioner plugin. Field names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True,
                                      use_attribute_docstrings=True)

    arm_subscription_id: str
    """ARM_SUBSCRIPTION_ID: the Azure subscription of the cluster."""
    arm_resource_group: str
    """ARM_RESOURCE_GROUP: the cluster's resource group."""
    azure_cluster_name: str
    """AZURE_CLUSTER_NAME: the AKS cluster's name."""
    location: str
    """LOCATION: the cluster's region (SKU and quota checks use it)."""

    arm_base_url: str = "https://management.azure.com"
    """ARM_BASE_URL: the Resource Manager endpoint (sovereign clouds, tests)."""
    arm_credential: CredentialKind = CredentialKind.AUTO
    """ARM_CREDENTIAL: auto | workload-identity | managed-identity | default."""
    azure_client_id: str | None = None
    """AZURE_CLIENT_ID: the identity's client ID (workload or user-assigned managed)."""
    azure_tenant_id: str | None = None
    """AZURE_TENANT_ID: for workload identity."""
    azure_federated_token_file: str | None = None
    """AZURE_FEDERATED_TOKEN_FILE: the projected service-account token (workload identity)."""
    arm_ca_bundle: Path | None = None
    """ARM_CA_BUNDLE: a PEM bundle to verify ARM and the token endpoint with (private endpoints, TLS-inspecting
    proxies, tests); the system store otherwise.
    """
    azure_node_resource_group: str | None = None
    """AZURE_NODE_RESOURCE_GROUP: the cluster's MC_ resource group (informational)."""

    aks_zones: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """AKS_ZONES: availability zones for new pools, comma-separated (empty: regional)."""
    aks_default_os_disk_gb: int = Field(default=128, ge=30, le=2048)
    """AKS_DEFAULT_OS_DISK_GB: OS disk when the Machine does not ask for storage."""
    aks_poll_interval_seconds: float = Field(default=10.0, gt=0)
    """AKS_POLL_INTERVAL_SECONDS: LRO poll interval when ARM sends no Retry-After."""
    aks_create_timeout_seconds: float = Field(default=900.0, gt=0)
    """AKS_CREATE_TIMEOUT_SECONDS: how long one create() waits for a pool before a RetryableError."""
    aks_wait_for_create: bool = True
    """AKS_WAIT_FOR_CREATE: create() waits for the pool, polling at ARM's Retry-After (holds one reconcile worker
    for minutes); false: it returns at once with no providerID and the pool's state, and the Machine
    reconciler calls again every poll interval (one GET each).
    """
    aks_node_wait_seconds: float = Field(default=60.0, ge=0)
    """AKS_NODE_WAIT_SECONDS: after the pool succeeds, how long to wait for its Node to register."""
    aks_sku_cache_seconds: float = Field(default=300.0, ge=0)
    """AKS_SKU_CACHE_SECONDS: how long SKU and quota answers are reused."""
    arm_retry_total: int = Field(default=10, ge=0)
    """ARM_RETRY_TOTAL: retries of one ARM request (429/5xx/connection)."""
    arm_retry_backoff_factor: float = Field(default=0.8, ge=0)
    """ARM_RETRY_BACKOFF_FACTOR: exponential backoff base when there is no Retry-After."""
    arm_retry_backoff_max: int = Field(default=60, ge=0)
    """ARM_RETRY_BACKOFF_MAX: cap on one backoff (seconds)."""
    arm_request_timeout_seconds: int = Field(default=60, gt=0)
    """ARM_REQUEST_TIMEOUT_SECONDS: read timeout of one ARM request."""

    @model_validator(mode="before")
    @classmethod
    def _name_missing(cls, data: Any) -> Any:
        """One clear line per missing variable instead of pydantic's generic 'Field required'."""
        if isinstance(data, dict):
            present = {str(key).lower() for key, value in data.items() if value not in (None, "")}
            missing = [name for name in REQUIRED_SETTINGS if name not in present]
            if missing:
                lines = "; ".join(f"{name.upper()} ({REQUIRED_SETTINGS[name]})" for name in missing)
                raise ValueError(f"the AKS provisioner needs these environment variables set: {lines}")
        return data

    @field_validator("aks_zones", mode="before")
    @classmethod
    def _split_zones(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [zone.strip() for zone in value.split(",") if zone.strip()]
        return value

    @property
    def cluster_resource_id(self) -> str:
        return (f"/subscriptions/{self.arm_subscription_id}/resourceGroups/{self.arm_resource_group}"
                f"/providers/Microsoft.ContainerService/managedClusters/{self.azure_cluster_name}")
