"""Provisioning: the plugin interface through which Machines become GPU nodes.

Plugins (AKS, Karpenter, third parties) import only the names below.
"""

from kaito_core.provisioning.protocol import (
    InstanceTypeInfo,
    InstanceTypeUnavailableError,
    InsufficientCapacityError,
    NodeRef,
    Provisioner,
    ProvisionerContext,
    ProvisionerError,
    ProvisionerNotFoundError,
    ProvisionerSettings,
    QuotaExceededError,
    RetryableError,
)
from kaito_core.provisioning.registry import (
    ENTRY_POINT_GROUP,
    UnknownProvisionerError,
    available_provisioners,
    load_provisioner,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "InstanceTypeInfo",
    "InstanceTypeUnavailableError",
    "InsufficientCapacityError",
    "NodeRef",
    "Provisioner",
    "ProvisionerContext",
    "ProvisionerError",
    "ProvisionerNotFoundError",
    "ProvisionerSettings",
    "QuotaExceededError",
    "RetryableError",
    "UnknownProvisionerError",
    "available_provisioners",
    "load_provisioner",
]
