"""The Azure credential the provisioner signs ARM requests with (azure-identity, async).

``auto`` (the default) picks workload identity when the pod has a projected
federated token (``AZURE_FEDERATED_TOKEN_FILE``, set by the AKS workload-identity
webhook), and ``DefaultAzureCredential`` otherwise, which itself tries the
environment, workload identity, managed identity and the developer tools.
"""

from __future__ import annotations

import os
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential, WorkloadIdentityCredential

from kaito_provisioner_aks.settings import AKSSettings, CredentialKind

__all__ = ["CredentialConfigError", "make_credential"]


class CredentialConfigError(ValueError):
    """The chosen credential kind lacks what it needs."""


def _transport_kwargs(settings: AKSSettings) -> dict[str, Any]:
    return {"connection_verify": str(settings.arm_ca_bundle)} if settings.arm_ca_bundle else {}


def make_credential(settings: AKSSettings) -> AsyncTokenCredential:
    """Build the credential ``settings.arm_credential`` names (the caller closes it)."""
    kind = settings.arm_credential
    client_id = settings.azure_client_id or os.environ.get("AZURE_CLIENT_ID")
    tenant_id = settings.azure_tenant_id or os.environ.get("AZURE_TENANT_ID")
    token_file = settings.azure_federated_token_file or os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
    kwargs = _transport_kwargs(settings)
    if kind is CredentialKind.AUTO:
        kind = CredentialKind.WORKLOAD_IDENTITY if token_file else CredentialKind.DEFAULT
    if kind is CredentialKind.WORKLOAD_IDENTITY:
        missing = [name for name, value in (("AZURE_CLIENT_ID", client_id), ("AZURE_TENANT_ID", tenant_id),
                                            ("AZURE_FEDERATED_TOKEN_FILE", token_file)) if not value]
        if missing:
            raise CredentialConfigError(
                f"workload identity needs {', '.join(missing)}: label the controller's service account for "
                "azure.workload.identity/use and annotate it with the identity's client ID")
        return WorkloadIdentityCredential(tenant_id=tenant_id, client_id=client_id, token_file_path=token_file,
                                          **kwargs)
    if kind is CredentialKind.MANAGED_IDENTITY:
        return ManagedIdentityCredential(client_id=client_id, **kwargs) if client_id else \
            ManagedIdentityCredential(**kwargs)
    return DefaultAzureCredential(
        workload_identity_client_id=client_id, workload_identity_tenant_id=tenant_id,
        managed_identity_client_id=client_id, **kwargs)
