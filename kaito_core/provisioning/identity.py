"""Which operator install made a Machine, its Node and its provider resource.

Labels such as ``kaito.sh/machine`` say what a node is *for*, not who made it: anyone can
put them on a node or an agent pool. The leak collector must delete only what is provably
ours, so every Machine the Workspace controller creates carries ``kaito.sh/install``
(:data:`~kaito_core.api.LABEL_INSTALL`), the provisioners pass it on to the Node they make
(:func:`~kaito_core.provisioning.node_labels_for`) and write it as an ARM tag on agent pools,
and the collector acts only on what carries its own install's value.

The value is a digest of the cluster's id and the operator's namespace: two installs in one
cluster (two namespaces) or one install name reused in two clusters never match. The cluster
id is the UID of the ``kube-system`` namespace, which lives as long as the cluster and which
every cluster has (the usual stand-in for a cluster id, as cluster registries use it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kaito_core.api.constants import LABEL_INSTALL
from kaito_core.engine.resources import NAMESPACE

__all__ = ["INSTALL_TAG", "InstallIdentity", "discover_install_identity"]

#: The ARM tag (and any other provider-side tag) carrying :attr:`InstallIdentity.value`.
INSTALL_TAG = "kaito-install"
#: The namespace whose UID names the cluster.
_CLUSTER_ID_NAMESPACE = "kube-system"


@dataclass(frozen=True)
class InstallIdentity:
    """One operator install: the cluster it runs in and its namespace."""

    cluster_id: str
    namespace: str

    def __post_init__(self) -> None:
        if not self.cluster_id or not self.namespace:
            raise ValueError("an install identity needs both a cluster id and a namespace")

    @property
    def value(self) -> str:
        """The label and tag value: 20 hex digits of sha256("<cluster id>/<namespace>") (a valid label value)."""
        return hashlib.sha256(f"{self.cluster_id}/{self.namespace}".encode()).hexdigest()[:20]

    def owns(self, labels: Mapping[str, str] | None) -> bool:
        """True when ``labels`` (a node's, a Machine's, a pool's node labels) say this install made it."""
        return bool(labels) and (labels or {}).get(LABEL_INSTALL) == self.value

    def labels(self) -> dict[str, str]:
        return {LABEL_INSTALL: self.value}


async def discover_install_identity(client: Any, namespace: str, *, cluster_id: str | None = None) -> InstallIdentity:
    """This install's identity: ``cluster_id`` when given (a setting), else the ``kube-system`` UID.

    Raises the client's error when the namespace cannot be read (the chart's ClusterRole grants
    ``get`` on it); the operator does not start without an identity rather than guess one.
    """
    if not cluster_id:
        kube_system: dict[str, Any] = await client.get(NAMESPACE, _CLUSTER_ID_NAMESPACE)
        cluster_id = str((kube_system.get("metadata") or {}).get("uid") or "")
        if not cluster_id:
            raise ValueError(f"namespace {_CLUSTER_ID_NAMESPACE} has no uid: cannot tell which cluster this is")
    return InstallIdentity(cluster_id=cluster_id, namespace=namespace)
