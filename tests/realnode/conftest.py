"""Fixtures for tests on real nodes (kubelet + containerd + runc) against the session's control plane.

Nothing here skips: a node binary that cannot be built, a missing tool or a
missing image fails the test with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kaito_core.testing.clusters import Cluster
from kaito_core.testing.nodes import GPU_RESOURCE, GPU_TAINT
from kaito_core.testing.realnode import NodeSpec, RealNodes

TEST_IMAGE = os.environ.get("KAITO_REALNODE_IMAGE", "localhost/kaito-curl:0.1.0")
GPU_NODE = "real-gpu-a"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/realnode/" in str(item.path):
            item.add_marker(pytest.mark.realnode)


@pytest.fixture(scope="module")
def real_nodes(kube_cluster: Cluster) -> Iterator[RealNodes]:
    """One real GPU-labelled node (tainted like Kaito's GPU nodes, ``nvidia.com/gpu: 1``)."""
    nodes = RealNodes(kube_cluster.kubeconfig)
    try:
        nodes.load_image(TEST_IMAGE)
        nodes.start([
            NodeSpec(
                GPU_NODE,
                labels={"accelerator": "nvidia", "node.kubernetes.io/instance-type": "Standard_NC6s_v3"},
                taints=[GPU_TAINT],
                extended_resources={GPU_RESOURCE: "1"},
            )
        ])
        yield nodes
    finally:
        nodes.stop()
