"""Every version the test control plane is built from, pinned in one place.

Kubernetes is the newest release whose ``go`` directive the supported Go toolchain
(1.26) builds. etcd stays on the 3.6 line, the one current kube-apiservers are
tested against (Debian's 3.4.23 is too old). kwok 0.8 simulates nodes and pods. Karpenter
1.14.1 is the newest whose ``go`` directive Go 1.26 builds (1.14.3 and later want a newer Go);
its kwok cloud provider is the real Karpenter controller the karpenter provisioner is tested against.
"""

from __future__ import annotations

__all__ = [
    "ETCD_VERSION",
    "HELM_VERSION",
    "KARPENTER_VERSION",
    "KUBERNETES_VERSION",
    "KWOK_VERSION",
    "MIN_GO_VERSION",
    "staging_version",
]

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
KARPENTER_VERSION = "v1.14.1"
MIN_GO_VERSION = (1, 26)


def staging_version(kubernetes_version: str = KUBERNETES_VERSION) -> str:
    """The ``k8s.io/<staging>`` module version that ships with a Kubernetes release.

    ``v1.37.2`` -> ``v0.37.2``: the staging repositories are tagged in lockstep.
    """
    major, minor, patch = kubernetes_version.lstrip("v").split(".")
    if major != "1":
        raise ValueError(f"unsupported Kubernetes major version in {kubernetes_version!r}")
    return f"v0.{minor}.{patch}"
