"""Test against a real Kubernetes control plane, like controller-runtime's envtest.

Public for operator authors who embed kaito-core's reconcilers::

    # conftest.py
    pytest_plugins = ["kaito_core.testing.pytest_plugin"]

    async def test_it(kube_api, kube_namespace, make_gpu_node): ...

Or start one by hand: ``with ControlPlane(mode=ControlPlaneMode.FULL) as cp: ...``.
The binaries (kube-apiserver, etcd, kube-controller-manager, kube-scheduler,
kubectl, kwok) are built from source through the Go module proxy into a cache
on first use; ``KUBEBUILDER_ASSETS`` points at ready-made ones instead.
"""

from kaito_core.testing.build import ToolchainMissingError, asset_dir, ensure_binaries
from kaito_core.testing.clusters import Cluster, ExistingCluster, cluster_from_environment
from kaito_core.testing.controlplane import ControlPlane, ControlPlaneMode, free_port
from kaito_core.testing.crds import install_crds
from kaito_core.testing.nodes import (
    GPU_RESOURCE,
    GPU_TAINT,
    create_gpu_node,
    gpu_node_manifest,
    wait_for_node_ready,
)
from kaito_core.testing.running import running_manager
from kaito_core.testing.versions import ETCD_VERSION, KUBERNETES_VERSION, KWOK_VERSION
from kaito_core.testing.waiting import condition, condition_is_true, eventually

__all__ = [
    "ETCD_VERSION",
    "GPU_RESOURCE",
    "GPU_TAINT",
    "KUBERNETES_VERSION",
    "KWOK_VERSION",
    "Cluster",
    "ControlPlane",
    "ControlPlaneMode",
    "ExistingCluster",
    "ToolchainMissingError",
    "asset_dir",
    "cluster_from_environment",
    "condition",
    "condition_is_true",
    "create_gpu_node",
    "ensure_binaries",
    "eventually",
    "free_port",
    "gpu_node_manifest",
    "install_crds",
    "running_manager",
    "wait_for_node_ready",
]
