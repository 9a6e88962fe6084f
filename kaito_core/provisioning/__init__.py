"""Provisioning: the plugin interface through which Machines become GPU nodes.

Plugins (AKS, Karpenter, third parties) import only the names below (and ``kaito_core.api``'s
labels, taint and models). ``parse_quantity`` is the catalog's (``kaito_presets``), the one
quantity parser.
"""

from kaito_presets import parse_quantity

from kaito_core.provisioning.byo import BYOProvisioner, BYOSettings, NoMatchingNodeError
from kaito_core.provisioning.handle import ProvisionerHandle
from kaito_core.provisioning.nodes import (
    LABEL_PROVISIONER,
    MACHINE,
    NodeCheck,
    NodeProblem,
    allocatable_gpus,
    machine_gpu_request,
    node_is_ready,
    node_labels_for,
    node_problem,
    node_taints_for,
    parse_count,
    parse_timestamp,
    requirement_problem,
    taint_matches,
)
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
    SupportsInstanceTypes,
)
from kaito_core.provisioning.registry import (
    ENTRY_POINT_GROUP,
    UnknownProvisionerError,
    available_provisioners,
    load_provisioner,
)
from kaito_core.provisioning.simulated import KWOK_ANNOTATION, SimulatedProvisioner, SimulatedSettings

__all__ = [
    "ENTRY_POINT_GROUP",
    "KWOK_ANNOTATION",
    "LABEL_PROVISIONER",
    "MACHINE",
    "BYOProvisioner",
    "BYOSettings",
    "InstanceTypeInfo",
    "InstanceTypeUnavailableError",
    "InsufficientCapacityError",
    "NoMatchingNodeError",
    "NodeCheck",
    "NodeProblem",
    "NodeRef",
    "Provisioner",
    "ProvisionerContext",
    "ProvisionerError",
    "ProvisionerHandle",
    "ProvisionerNotFoundError",
    "ProvisionerSettings",
    "QuotaExceededError",
    "RetryableError",
    "SimulatedProvisioner",
    "SimulatedSettings",
    "SupportsInstanceTypes",
    "UnknownProvisionerError",
    "allocatable_gpus",
    "available_provisioners",
    "load_provisioner",
    "machine_gpu_request",
    "node_is_ready",
    "node_labels_for",
    "node_problem",
    "node_taints_for",
    "parse_count",
    "parse_quantity",
    "parse_timestamp",
    "requirement_problem",
    "taint_matches",
]
