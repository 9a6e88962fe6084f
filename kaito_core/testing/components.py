"""The command line each control plane component runs with, and the cluster's address ranges.

Pure: :class:`~kaito_core.testing.controlplane.ControlPlane` decides ports and folders and starts the
processes; this module says what each one is told (the flags kwokctl and envtest use, and why ours
differ where they do).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kaito_core.testing.certs import CertificateSet

__all__ = [
    "AUDIT_POLICY",
    "KWOK_NODE_ANNOTATION",
    "POD_CIDR",
    "SERVICE_CIDR",
    "SERVICE_IP",
    "apiserver_args",
    "controller_manager_args",
    "etcd_args",
    "kwok_args",
    "scheduler_args",
]

SERVICE_CIDR = "10.96.0.0/16"  # room for thousands of Services (a /24 filled up at ~250 Workspaces)
SERVICE_IP = "10.96.0.1"  # the "kubernetes" Service: the first address of the range
POD_CIDR = "10.0.128.0/17"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Metadata level for service accounts only: enough to know every call they make, cheap to write.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


def etcd_args(binary: str, data_dir: Path, client_url: str, peer_port: int) -> list[str]:
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        binary,
        "--name=default",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        # Tests do not need durability across power loss; fsync dominates etcd latency.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(binary: str, *, port: int, etcd_url: str, cert_dir: Path, certs: CertificateSet,
                   extra: Sequence[str] = (), egress_config: Path | None = None,
                   audit: tuple[Path, Path] | None = None) -> list[str]:
    """``audit`` is (policy file, log file)."""
    args = [
        binary,
        f"--etcd-servers={etcd_url}",
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={certs.serving_cert}",
        f"--tls-private-key-file={certs.serving_key}",
        f"--client-ca-file={certs.ca_cert}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={certs.sa_public}",
        f"--service-account-signing-key-file={certs.sa_private}",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        # Pods in a namespace made a moment ago would otherwise wait for the
        # "default" ServiceAccount; simulated pods never use a token.
        "--disable-admission-plugins=ServiceAccount",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--endpoint-reconciler-type=none",
        # The apiserver authenticates to real nodes' kubelets (logs, exec) as the admin.
        f"--kubelet-client-certificate={certs.admin_cert}",
        f"--kubelet-client-key={certs.admin_key}",
        # a node's name resolves nowhere here; its InternalIP is what the egress proxy routes
        "--kubelet-preferred-address-types=InternalIP,Hostname,InternalDNS,ExternalDNS,ExternalIP",
        *extra,
    ]
    if egress_config is not None:
        args.append(f"--egress-selector-config-file={egress_config}")
    if audit is not None:
        policy, log = audit
        args += [f"--audit-policy-file={policy}", f"--audit-log-path={log}",
                 "--audit-log-maxsize=500", "--audit-log-maxbackup=1"]
    return args


def controller_manager_args(binary: str, kubeconfig: Path, certs: CertificateSet, port: int) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--root-ca-file={certs.ca_cert}",
        f"--service-account-private-key-file={certs.sa_private}",
        f"--cluster-signing-cert-file={certs.ca_cert}",
        f"--cluster-signing-key-file={certs.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--concurrent-deployment-syncs=10",
        "--concurrent-replicaset-syncs=10",
        "--concurrent-gc-syncs=40",
        "--concurrent-job-syncs=10",
        "--concurrent-namespace-syncs=10",
    ]


def scheduler_args(binary: str, kubeconfig: Path, port: int) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
    ]


def kwok_args(binary: str, kubeconfig: Path, health_port: int, stages: Sequence[str]) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        f"--cidr={POD_CIDR}",
        "--node-ip=10.0.128.1",
        "--node-lease-duration-seconds=40",
        f"--server-address=127.0.0.1:{health_port}",
        *(f"--config={stage}" for stage in stages),
    ]
