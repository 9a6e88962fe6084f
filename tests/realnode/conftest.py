"""Fixtures for tests on real nodes (kubelet + containerd + runc) against the session's control plane.

Nothing here skips: a node binary that cannot be built, a missing tool or a
missing image fails the test with the reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from kaito_core.testing.clusters import Cluster
from kaito_core.testing.nodes import GPU_RESOURCE, GPU_TAINT
from kaito_core.testing.realnode import NodeSpec, RealNodes

GPU_NODE = "real-gpu-a"


def newest_local_image(repository: str) -> str:
    """The newest tagged podman image of ``repository`` (images.py tags them by version and hash)."""
    out = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", "--sort", "created",
                          "--filter", f"reference={repository}"], capture_output=True, text=True)
    tagged = [ref for ref in out.stdout.split() if not ref.endswith(":<none>")]
    if not tagged:
        pytest.fail(f"podman has no {repository} image ({out.stderr.strip() or 'none listed'}); build it with "
                    "python -m kaito_core.testing.images")
    return tagged[0]


@pytest.fixture(scope="session")
def curl_image() -> str:
    """The image the test pods run (``KAITO_REALNODE_IMAGE`` overrides): curl and sh."""
    return os.environ.get("KAITO_REALNODE_IMAGE") or newest_local_image("localhost/kaito-curl")


@pytest.fixture(scope="session")
def base_image() -> str:
    """The project's Debian base (python3, sh): the http server pods."""
    return newest_local_image("localhost/kaito-base")


@pytest.fixture(scope="module")
def real_nodes(kube_cluster: Cluster, curl_image: str) -> Iterator[RealNodes]:
    """One real GPU-labelled node (tainted like Kaito's GPU nodes, ``nvidia.com/gpu: 1``)."""
    nodes = RealNodes(kube_cluster.kubeconfig)
    try:
        nodes.load_image(curl_image)
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
