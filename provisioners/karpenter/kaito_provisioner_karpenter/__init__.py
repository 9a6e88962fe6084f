"""kaito-core provisioner plugin: Karpenter NodeClaims (``--provisioner karpenter``).

Written against kaito-core's public API only, as any third-party plugin would be.
"""

from kaito_provisioner_karpenter.provisioner import (
    LABEL_NODEPOOL,
    NODE_CLASS_GROUPS,
    NODECLAIM,
    NODECLAIM_CRD,
    NODEPOOL,
    KarpenterProvisioner,
    KarpenterSettings,
    node_pool_manifest,
    node_pool_name,
    nodeclaim_conditions,
)

__all__ = [
    "LABEL_NODEPOOL",
    "NODECLAIM",
    "NODECLAIM_CRD",
    "NODEPOOL",
    "NODE_CLASS_GROUPS",
    "KarpenterProvisioner",
    "KarpenterSettings",
    "node_pool_manifest",
    "node_pool_name",
    "nodeclaim_conditions",
]
