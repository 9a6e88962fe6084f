"""The files one real node's processes read: its CNI bridge, containerd's config, the kubelet's.

Written by :meth:`RealNode.start_runtime <kaito_core.testing.realnode.RealNode.start_runtime>` into the
node's folder before containerd starts.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

import yaml

from kaito_core.testing.realnode.common import CLUSTER_DNS_IP, CLUSTER_DOMAIN
from kaito_core.testing.realnode.pause import pause_image_ref

if TYPE_CHECKING:
    from kaito_core.testing.realnode.node import RealNode
    from kaito_core.testing.realnode.nodes import RealNodes


def write_configs(node: RealNode, owner: RealNodes) -> None:
    """The CNI conflist, containerd's ``config.toml``, the kubelet's kubeconfig and configuration."""
    for sub in ("run", "logs", "pod-logs", "kubelet", "cni/net.d", "cni/ipam", "containerd"):
        (node.root / sub).mkdir(parents=True, exist_ok=True)
    cni = {
        "cniVersion": "1.0.0",
        "name": f"kaito-{node.name}",
        "plugins": [{
            "type": "bridge",
            "bridge": f"kbr{node.index}",
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": node.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(node.root / "cni" / "ipam"),
            },
        }],
    }
    (node.root / "cni" / "net.d" / "10-kaito.conflist").write_text(json.dumps(cni, indent=1))
    runc = shutil.which("runc") or "/usr/bin/runc"
    c = node.root / "containerd"
    (c / "config.toml").write_text(f"""version = 3
root = '{c / "root"}'
state = '{c / "state"}'
disabled_plugins = ['io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.blockfile',
  'io.containerd.snapshotter.v1.erofs', 'io.containerd.nri.v1.nri', 'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing']
oom_score = 0
imports = []

[grpc]
  address = '{node.socket}'

[ttrpc]
  address = '{node.socket}.ttrpc'

[metrics]
  address = ''

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '{c / "opt"}'
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    # keep the unpacked snapshot only, not a second copy of every layer (as ctr import --discard-unpacked-layers)
    discard_unpacked_layers = true
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{pause_image_ref()}'
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '{owner.certs_dir}'
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_cdi = false
    disable_apparmor = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '{node.root / "cni" / "net.d"}'
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
""")
    cluster = owner.cluster
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": f"https://127.0.0.1:{owner.proxy_port}", "certificate-authority": cluster.ca}}],
        "users": [{"name": "kubelet", "user": {
            "client-certificate": cluster.client_cert, "client-key": cluster.client_key}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "kubelet"}}],
        "current-context": "local",
    }
    (node.root / "kubelet.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": node.ip,
        "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": cluster.ca}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "podLogsDir": str(node.pod_logs_dir),
        "resolvConf": "",
        # pods resolve Services and pods by name (distributed inference's MASTER_ADDR, a headless
        # Service); names outside the cluster resolve nowhere: nothing leaves the machine
        **({"clusterDNS": [CLUSTER_DNS_IP], "clusterDomain": CLUSTER_DOMAIN} if owner.cluster_dns else {}),
        "makeIPTablesUtilChains": False,
        "registerNode": True,
        "registerWithTaints": [dict(t) for t in node.spec.taints],
        "maxPods": node.spec.max_pods,
        "nodeStatusUpdateFrequency": "5s",
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "shutdownGracePeriod": "0s",
    }
    (node.root / "kubelet.yaml").write_text(yaml.safe_dump(config))
