"""The services a run's network namespace shares among its nodes: one kube-proxy and one CoreDNS.

Each runs inside the namespace (started through its ``nsenter`` prefix), is configured from a copy of
the first node's kubelet kubeconfig and counts as started once its health URL answers there.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from kaito_core.testing.netns import NetworkNamespace
from kaito_core.testing.process import ManagedProcess, wait_until
from kaito_core.testing.realnode.common import CLUSTER_DNS_IP, CLUSTER_DOMAIN, POD_NET

if TYPE_CHECKING:
    from kaito_core.testing.realnode.node import RealNode


def start_cluster_dns(
    netns: NetworkNamespace, workdir: Path, binaries: Mapping[str, Path], node: RealNode
) -> ManagedProcess:
    """CoreDNS's ``kubernetes`` plugin answers ``cluster.local`` (Services, headless pods, reverse
    lookups) from the apiserver; every other name is refused (no ``forward``: no way out)."""
    folder = workdir / "coredns"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(node.root / "kubelet.kubeconfig", folder / "kubeconfig")  # outlives remove_node
    ensure_address(netns, CLUSTER_DNS_IP)
    (folder / "Corefile").write_text(f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {CLUSTER_DNS_IP}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {folder / "kubeconfig"} local
        pods insecure
        ttl 5
    }}
    health 127.0.0.1:10254
    cache 5
}}
""")
    return start_in_namespace(
        netns,
        "coredns",
        [str(binaries["coredns"]), "-conf", str(folder / "Corefile")],
        folder,
        "http://127.0.0.1:10254/health",
    )


def start_kube_proxy(
    netns: NetworkNamespace, workdir: Path, binaries: Mapping[str, Path], node: RealNode
) -> ManagedProcess:
    """One kube-proxy for the whole namespace: every node shares its iptables, so one writes the rules.

    ``masqueradeAll``: without br_netfilter a reply between two pods on one bridge
    would skip the DNAT's reverse translation; SNAT to the gateway routes it back.
    """
    folder = workdir / "kube-proxy"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(node.root / "kubelet.kubeconfig", folder / "kubeconfig")  # outlives remove_node
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(folder / "kubeconfig")},
        "hostnameOverride": node.name,  # only local-traffic policies look at it
        "mode": "iptables",
        "healthzBindAddress": "127.0.0.1:10256",  # the namespace's loopback
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": f"{POD_NET}.0.0/16",
        "iptables": {"masqueradeAll": True, "minSyncPeriod": "0s", "syncPeriod": "30s"},
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return start_in_namespace(
        netns,
        "kube-proxy",
        [str(binaries["kube-proxy"]), f"--config={folder / 'config.yaml'}", "--v=1"],
        folder,
        "http://127.0.0.1:10256/healthz",
    )


def start_in_namespace(
    netns: NetworkNamespace, name: str, argv: list[str], folder: Path, health_url: str
) -> ManagedProcess:
    """Start one of the namespace's shared services and wait until its health URL (inside the
    namespace) answers."""
    proc = ManagedProcess(name, [*netns.exec_prefix(), *argv], folder)
    proc.start()

    def healthy() -> bool:
        proc.check_alive()
        probe = subprocess.run(
            [
                *netns.exec_prefix(),
                "python3",
                "-c",
                f"import urllib.request;urllib.request.urlopen({health_url!r},timeout=2)",
            ],
            capture_output=True,
        )
        return probe.returncode == 0

    wait_until(healthy, 60, f"{name} {health_url}", interval=0.5)
    return proc


def ensure_address(netns: NetworkNamespace, address: str) -> None:
    """Give the namespace's node device ``address`` unless it has it already."""
    if f"{address}/" not in netns.ip("-o", "addr", "show", "dev", netns.NODE_DEVICE):
        netns.add_address(address)
