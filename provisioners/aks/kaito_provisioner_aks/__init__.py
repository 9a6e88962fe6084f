"""kaito-core provisioner plugin ``aks``: one AKS agent pool per Machine, through the Azure SDK.

Installed, it registers under the ``kaito.provisioners`` entry-point group as
``aks``; ``kaito controller --provisioner aks`` loads it with its settings read
from the environment (see :class:`AKSSettings`).
"""

from kaito_provisioner_aks.credentials import CredentialConfigError, make_credential
from kaito_provisioner_aks.errors import AuthenticationFailedError, map_arm_error
from kaito_provisioner_aks.naming import POOL_NAME_RE, pool_name
from kaito_provisioner_aks.provisioner import (
    AGENTPOOL_LABEL,
    CREATED_LABEL,
    GPU_TAINT,
    MACHINE_LABEL,
    PROVISIONER_LABEL,
    AKSProvisioner,
)
from kaito_provisioner_aks.settings import AKSSettings, CredentialKind
from kaito_provisioner_aks.skus import QuotaUsage, SkuCatalog, SkuInfo

__all__ = [
    "AGENTPOOL_LABEL",
    "CREATED_LABEL",
    "GPU_TAINT",
    "MACHINE_LABEL",
    "POOL_NAME_RE",
    "PROVISIONER_LABEL",
    "AKSProvisioner",
    "AKSSettings",
    "AuthenticationFailedError",
    "CredentialConfigError",
    "CredentialKind",
    "QuotaUsage",
    "SkuCatalog",
    "SkuInfo",
    "make_credential",
    "map_arm_error",
    "pool_name",
]
