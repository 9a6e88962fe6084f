"""What a real node should look like (:class:`NodeSpec`) and the control plane the nodes join.

:func:`_read_kubeconfig` takes the apiserver's port and the file paths of its CA and client
certificate from a kubeconfig: the nodes reach that apiserver on their namespace's loopback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml


@dataclass
class NodeSpec:
    """What one node should look like to the scheduler."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    """``{"key": ..., "value": ..., "effect": ...}``, registered by the kubelet."""
    extended_resources: Mapping[str, str] = field(default_factory=dict)
    """e.g. ``{"nvidia.com/gpu": "1"}``: set on the Node status (capacity and allocatable)."""
    max_pods: int = 110
    images: bool = True
    """Import the images loaded with :meth:`RealNodes.load_image` (False: only the sandbox image; a
    system node that pulls what it runs through the registry mirror)."""


@dataclass
class _Cluster:
    kubeconfig: Path
    server_port: int
    ca: str
    client_cert: str
    client_key: str


def _read_kubeconfig(path: Path) -> _Cluster:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    current = data.get("current-context")
    context = next(c["context"] for c in data["contexts"] if c["name"] == current) if current else \
        data["contexts"][0]["context"]
    cluster = next(c["cluster"] for c in data["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in data["users"] if u["name"] == context["user"])
    url = urlparse(cluster["server"])
    if url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
        raise ValueError(f"real nodes need an apiserver on 127.0.0.1:<port>, not {cluster['server']}")
    for key in ("certificate-authority", "client-certificate", "client-key"):
        if key not in cluster and key not in user:
            raise ValueError(f"{path}: real nodes need {key} as a file path in the kubeconfig")
    return _Cluster(path, url.port, cluster["certificate-authority"], user["client-certificate"],
                    user["client-key"])
