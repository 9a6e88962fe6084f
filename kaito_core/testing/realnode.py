"""Real nodes for the local control plane: kubelet + containerd + runc + CNI bridge.

kwok marks pods Running without running anything; a :class:`RealNode` runs them.
Each node is a kubelet and a containerd of its own (built from source by
:func:`~kaito_core.testing.build.ensure_node_binaries`), Debian's runc, and the
CNI bridge plugin, all inside one private network namespace per
:class:`RealNodes` (see :mod:`kaito_core.testing.netns`):

* node ``n`` registers ``10.231.0.<n>`` (an address of the namespace's ``knodes``
  device) and binds its kubelet there;
* its pods get ``10.232.<n>.0/24`` on the bridge ``kbr<n>``;
* the kubelet reaches the apiserver through a proxy listening on the
  namespace's ``127.0.0.1``, so the apiserver's certificate (issued for
  127.0.0.1) is valid unchanged.

What the host allows shapes the configuration: cgroups are v1 (with a v2 mount),
so the kubelet runs ``cgroupfs`` with ``failCgroupV1: false`` and no QoS
cgroups; ``CAP_SYS_RESOURCE`` is missing, so containerd restricts OOM score
adjustments; no registry is reachable, so the sandbox image is a static
``pause`` binary packed here into an OCI archive and images come from podman's
storage (:meth:`RealNodes.load_image`), pods using ``imagePullPolicy: Never``
or ``IfNotPresent``.

The apiserver reaches the kubelets (their addresses live in the namespace) through
its egress proxy (:mod:`kaito_core.testing.egress`): each run registers its
namespace's networks with the control plane, so ``kubectl logs``, ``exec``,
``run -it`` and ``port-forward`` work as on any cluster. :meth:`RealNode.pod_log`
reads the log files the kubelet writes (the CRI log of each container) without
the apiserver.

:meth:`RealNodes.stop` removes everything a run made: processes (kubelet,
containerd, shims, containers, kube-proxy), mounts under the run's folder,
container cgroups (``/k8s.io/<id>``), the network namespace with every link and
iptables rule in it. A run whose owner was ``kill -9``-ed is swept by the next
one (:func:`sweep_stale_runs`).

Use::

    with RealNodes(cluster.kubeconfig) as nodes:          # root; the apiserver on 127.0.0.1
        nodes.load_image("localhost/kaito-curl:0.1.0")    # podman -> every node's containerd
        (gpu,) = nodes.start([NodeSpec("gpu-a", labels={"accelerator": "nvidia"},
                                       taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
                                       extended_resources={"nvidia.com/gpu": "1"})])
        ...                                               # pods with imagePullPolicy: Never
        gpu.pod_log("ns", "pod", "container")
        gpu.kill_kubelet(); gpu.wait_not_ready(); gpu.start_kubelet(); gpu.wait_ready()
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from kaito_core.testing.build import (
    cache_root,
    ensure_binaries,
    ensure_node_binaries,
    ensure_pause_binary,
    pause_hash,
)
from kaito_core.testing.controlplane import SERVICE_CIDR
from kaito_core.testing.egress import register_route, unregister_route
from kaito_core.testing.netns import NetworkNamespace, list_kaito_netns
from kaito_core.testing.process import ManagedProcess, wait_until

__all__ = [
    "CLUSTER_DNS_IP",
    "HOST_SERVICES_IP",
    "NodeSpec",
    "RealNode",
    "RealNodes",
    "cgroup_dirs",
    "mounts_under",
    "parse_cri_log",
    "pause_image_ref",
    "processes_mentioning",
    "sweep_stale_runs",
]

NODE_NET = "10.231.0"
POD_NET = "10.232"
#: The namespace's address where :meth:`RealNodes.expose_host_port` makes host ports reachable (pods too).
HOST_SERVICES_IP = f"{NODE_NET}.254"
#: The cluster DNS (CoreDNS) every node's pods are told to use (the kubelet's ``clusterDNS``).
CLUSTER_DNS_IP = f"{NODE_NET}.253"
CLUSTER_DOMAIN = "cluster.local"
_TASK_DIR = "io.containerd.runtime.v2.task"
_K8S_NS = "k8s.io"


def pause_image_ref() -> str:
    return f"localhost/kaito-pause:{pause_hash()}"


def mounts_under(folder: Path) -> list[str]:
    """Mount points (from /proc/mounts) at or below ``folder``, deepest first."""
    prefix = str(folder.resolve())
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target == prefix or target.startswith(prefix + "/"):
            found.append(target)
    return sorted(set(found), key=lambda path: path.count("/"), reverse=True)


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (the run's folder names every process it started)."""
    pids = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def parse_cri_log(raw: str) -> str:
    """The text of a CRI container log: ``<time> <stream> <P|F> <message>`` lines, partial (P) ones joined."""
    out: list[str] = []
    for line in raw.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        message = parts[3] if len(parts) == 4 else ""
        out.append(message if parts[2] == "P" else message + "\n")
    return "".join(out)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _pause_archive(folder: Path) -> Path:
    """An OCI archive of a one-file image: the static pause binary, PATH set in its config."""
    archive = folder / f"kaito-pause-{pause_hash()}.oci.tar"
    if archive.exists():
        return archive
    binary = ensure_pause_binary().read_bytes()
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = len(binary), 0o755, 0
        layer.addfile(info, io.BytesIO(binary))
    layer_tar = layer_buf.getvalue()
    layer_gz = gzip.compress(layer_tar, mtime=0)

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": ["/pause"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            },
            "rootfs": {"type": "layers", "diff_ids": [digest(layer_tar)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": digest(layer_gz), "size": len(layer_gz)}],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest(manifest),
                "size": len(manifest),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": pause_image_ref(),
                                "org.opencontainers.image.ref.name": pause_hash()},
            }],
        },
        sort_keys=True,
    ).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for blob in (layer_gz, config, manifest):
        files[f"blobs/sha256/{digest(blob).split(':')[1]}"] = blob
    folder.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w") as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            out.addfile(info, io.BytesIO(data))
    os.replace(partial, archive)
    return archive


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


class RealNode:
    """One kubelet + containerd; made by :meth:`RealNodes.start`."""

    def __init__(self, spec: NodeSpec, index: int, owner: RealNodes):
        self.spec = spec
        self.name = spec.name
        self.index = index
        self.ip = f"{NODE_NET}.{index}"
        self.pod_cidr = f"{POD_NET}.{index}.0/24"
        self._owner = owner
        self.root = owner.workdir / spec.name
        self.started_at = 0.0
        self.ready_after = 0.0
        self.timings: dict[str, float] = {}
        """Seconds: ``containerd`` (up), ``images`` (imported), ``kubelet_to_ready`` (the last start)."""
        self._kubelet_started_at = 0.0
        self._kubelet: ManagedProcess | None = None
        self._containerd: ManagedProcess | None = None

    # -- paths
    @property
    def socket(self) -> Path:
        return self.root / "run" / "containerd.sock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pod_logs_dir(self) -> Path:
        return self.root / "pod-logs"

    # -- lifecycle
    def _write_configs(self) -> None:
        owner = self._owner
        for sub in ("run", "logs", "pod-logs", "kubelet", "cni/net.d", "cni/ipam", "containerd"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        cni = {
            "cniVersion": "1.0.0",
            "name": f"kaito-{self.name}",
            "plugins": [{
                "type": "bridge",
                "bridge": f"kbr{self.index}",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(self.root / "cni" / "ipam"),
                },
            }],
        }
        (self.root / "cni" / "net.d" / "10-kaito.conflist").write_text(json.dumps(cni, indent=1))
        runc = shutil.which("runc") or "/usr/bin/runc"
        c = self.root / "containerd"
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
  address = '{self.socket}'

[ttrpc]
  address = '{self.socket}.ttrpc'

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
      conf_dir = '{self.root / "cni" / "net.d"}'
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
        (self.root / "kubelet.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": self.ip,
            "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": cluster.ca}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(self.pod_logs_dir),
            "resolvConf": "",
            # pods resolve Services and pods by name (distributed inference's MASTER_ADDR, a headless
            # Service); names outside the cluster resolve nowhere: nothing leaves the machine
            **({"clusterDNS": [CLUSTER_DNS_IP], "clusterDomain": CLUSTER_DOMAIN} if owner.cluster_dns else {}),
            "makeIPTablesUtilChains": False,
            "registerNode": True,
            "registerWithTaints": [dict(t) for t in self.spec.taints],
            "maxPods": self.spec.max_pods,
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
        (self.root / "kubelet.yaml").write_text(yaml.safe_dump(config))

    def start(self) -> None:
        """Start containerd, import the sandbox image and the loaded ones, start the kubelet (not yet Ready)."""
        self.start_runtime()
        self.import_images()
        self.start_kubelet()

    def start_runtime(self) -> None:
        # Processes are spawned from the calling thread: their parent-death signal fires when
        # *that thread* ends, so call this (and start_kubelet) from a thread that lives on.
        self.started_at = time.monotonic()
        self._write_configs()
        self.start_containerd()
        self.timings["containerd"] = time.monotonic() - self.started_at

    def import_images(self) -> None:
        """The sandbox image and every image loaded so far (safe to run on a worker thread)."""
        began = time.monotonic()
        self._owner.import_into(self, _pause_archive(cache_root() / "images" / "realnode"))
        for archive in self._owner.loaded_archives() if self.spec.images else ():
            self._owner.import_into(self, archive)
        self.timings["images"] = time.monotonic() - began

    def start_containerd(self) -> None:
        bins = self._owner.binaries
        ns = self._owner.netns
        env = {"PATH": f"{bins['containerd'].parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        proc = ManagedProcess(
            "containerd",
            [*ns.exec_prefix(), str(bins["containerd"]), "--config", str(self.root / "containerd" / "config.toml"),
             "--log-level", "info"],
            self.logs,
            env=env,
        )
        proc.start()
        self._containerd = proc
        wait_until(lambda: proc.check_alive() and self.ctr("version").returncode == 0, 60,
                   f"containerd of {self.name}", interval=0.2)

    def start_kubelet(self) -> None:
        bins = self._owner.binaries
        proc = ManagedProcess(
            "kubelet",
            [*self._owner.netns.exec_prefix(), str(bins["kubelet"]),
             f"--config={self.root / 'kubelet.yaml'}",
             f"--kubeconfig={self.root / 'kubelet.kubeconfig'}",
             f"--root-dir={self.root / 'kubelet'}",
             f"--cert-dir={self.root / 'kubelet' / 'pki'}",
             f"--hostname-override={self.name}",
             f"--node-ip={self.ip}",
             "--v=1"],
            self.logs,
        )
        proc.start()
        self._kubelet = proc
        self._kubelet_started_at = time.monotonic()

    @property
    def kubelet(self) -> ManagedProcess:
        assert self._kubelet is not None, f"the kubelet of {self.name} was never started"
        return self._kubelet

    @property
    def containerd(self) -> ManagedProcess:
        assert self._containerd is not None, f"containerd of {self.name} was never started"
        return self._containerd

    def stop_kubelet(self) -> None:
        self.kubelet.stop()

    def kill_kubelet(self) -> None:
        """SIGKILL the kubelet, as a crash would; containerd and the pods keep running."""
        self.kubelet.kill()

    def restart_kubelet(self) -> None:
        if self._kubelet is not None:
            self._kubelet.stop()
        self.start_kubelet()

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``ctr`` against this node's containerd, in its ``k8s.io`` namespace."""
        return subprocess.run(
            [str(self._owner.binaries["ctr"]), "--address", str(self.socket), "--namespace", _K8S_NS, *args],
            capture_output=True, text=True, timeout=timeout,
        )

    # -- what tests look at
    def node_object(self) -> dict[str, Any] | None:
        proc = self._owner.kubectl("get", "node", self.name, "-o", "json", check=False)
        if proc.returncode != 0:
            return None
        node: dict[str, Any] = json.loads(proc.stdout)
        return node

    def is_ready(self) -> bool:
        node = self.node_object()
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_ready(self, timeout: float = 120, interval: float = 0.5) -> float:
        """Wait until the Node is Ready (raising with the kubelet's log if it dies); seconds since start."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            self.kubelet.check_alive()  # a dead kubelet fails at once, with its log
            self.containerd.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.name} not Ready after {timeout:.0f}s; kubelet log:\n"
                                   f"{self.kubelet.log_tail()}")
            time.sleep(interval)
        self.ready_after = time.monotonic() - self.started_at
        self.timings["kubelet_to_ready"] = time.monotonic() - self._kubelet_started_at
        return self.ready_after

    def wait_not_ready(self, timeout: float = 120) -> None:
        wait_until(lambda: not self.is_ready(), timeout, f"node {self.name} NotReady", interval=0.5)

    def apply_node_status(self) -> None:
        """Labels, and extended resources on capacity + allocatable (the documented status patch)."""
        if self.spec.labels:
            self._owner.kubectl("label", "node", self.name, "--overwrite",
                                *(f"{k}={v}" for k, v in self.spec.labels.items()))
        if self.spec.extended_resources:
            ops = [
                {"op": "add", "path": f"/status/{part}/{key.replace('~', '~0').replace('/', '~1')}", "value": value}
                for key, value in self.spec.extended_resources.items()
                for part in ("capacity", "allocatable")
            ]
            self._owner.kubectl("patch", "node", self.name, "--subresource=status", "--type=json",
                                "-p", json.dumps(ops))

    def pod_log(self, namespace: str, pod: str, container: str, restart: int = 0) -> str:
        """The CRI log of a container (``<podLogsDir>/<ns>_<pod>_<uid>/<container>/<n>.log``), message text only."""
        folders = sorted(self.pod_logs_dir.glob(f"{namespace}_{pod}_*"))
        if not folders:
            raise FileNotFoundError(f"no logs for {namespace}/{pod} on {self.name}")
        return parse_cri_log((folders[-1] / container / f"{restart}.log").read_text())

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of the kubelet and containerd (from /proc/<pid>/status)."""
        out = {}
        for name, proc in (("kubelet", self._kubelet), ("containerd", self._containerd)):
            if proc is None or proc.pid is None or not proc.running():
                continue
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[name] = int(line.split()[1]) * 1024
        return out

    # -- teardown
    def _task_dirs(self) -> list[Path]:
        base = self.root / "containerd" / "state" / _TASK_DIR / _K8S_NS
        return sorted(base.iterdir()) if base.is_dir() else []

    def container_ids(self) -> list[str]:
        """Every container (sandboxes included) this node's containerd has a task for."""
        return [path.name for path in self._task_dirs()]

    def stop(self) -> None:
        """Stop the kubelet, kill every container, stop containerd, then sweep what is left."""
        if self._kubelet is not None:
            self._kubelet.stop()
        ids = self.container_ids()
        shim_sockets = []
        for folder in self._task_dirs():
            with contextlib.suppress(OSError, ValueError):
                _kill(int((folder / "init.pid").read_text().strip()))
            with contextlib.suppress(OSError):
                address = (folder / "address").read_text().strip()
                shim_sockets.append(Path(address.removeprefix("unix://")))
        if self._containerd is not None and self._containerd.running():
            for cid in ids:
                self.ctr("tasks", "delete", "--force", cid, timeout=30)
            self._containerd.stop()
        for pid in processes_mentioning(str(self.root)):
            _kill(pid)
        _remove_container_cgroups(ids)
        for target in mounts_under(self.root):
            subprocess.run(["umount", "--lazy", target], capture_output=True)
        for sock in shim_sockets:
            with contextlib.suppress(OSError):
                sock.unlink()


def cgroup_dirs(relative: str) -> list[Path]:
    """The folders of cgroup ``relative`` (e.g. ``/kaito-x/node``) in every mounted hierarchy that has it."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2"):
            path = Path(fields[1]) / relative.lstrip("/")
            if path.is_dir():
                found.append(path)
    return found


def _rmdir_retrying(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # processes still leaving
            time.sleep(0.1)


def _remove_container_cgroups(ids: Sequence[str]) -> None:
    """rmdir the cgroup of each of our containers, in every hierarchy (v1 ones and the v2 mount).

    Without QoS cgroups the kubelet gives the CRI no cgroup parent, so containerd
    puts each container at ``/k8s.io/<id>`` (its namespace, fixed for the CRI). runc
    removes them on a clean delete; this catches what a kill left behind. The shared
    ``/k8s.io`` parent goes too, but only when empty (rmdir refuses otherwise).
    """
    for cid in ids:
        for path in cgroup_dirs(f"/{_K8S_NS}/{cid}"):
            _rmdir_retrying(path)
    for path in cgroup_dirs(f"/{_K8S_NS}"):
        with contextlib.suppress(OSError):
            path.rmdir()


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/<pid>/stat): a pid plus this names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(folder: Path) -> bool:
    try:
        owner = json.loads((folder / "owner.json").read_text())
    except (OSError, ValueError):
        return True  # not ours, or still being written: leave it alone
    return bool(_start_time(int(owner["pid"])) == owner["start"])


def _sweep_folder(folder: Path) -> None:
    """Remove what a dead run left: its processes, containers, cgroups and mounts (then the folder)."""
    ids: list[str] = []
    for tasks in folder.glob(f"*/containerd/state/{_TASK_DIR}/{_K8S_NS}"):
        for task in tasks.iterdir():
            ids.append(task.name)
            with contextlib.suppress(OSError, ValueError):
                _kill(int((task / "init.pid").read_text().strip()))
    for pid in processes_mentioning(str(folder)):
        _kill(pid)
    _remove_container_cgroups(ids)
    for target in mounts_under(folder):
        subprocess.run(["umount", "--lazy", target], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def sweep_stale_runs() -> list[str]:
    """Clean up after runs whose owner died (a ``kill -9`` of the test runner); returns their names.

    kubelet and containerd die with the runner (parent-death signal), but the
    shims and containers were started by containerd and survive it. Each run
    records its owner (pid and start time) in ``<folder>/owner.json``; a run whose
    owner is gone is swept: processes, containers, cgroups, mounts, the network
    namespace. Runs of live owners are never touched.
    """
    swept = []
    for name in list_kaito_netns():
        folder = Path(tempfile.gettempdir()) / name
        if not (folder / "owner.json").exists() or _owner_alive(folder):
            continue
        _sweep_folder(folder)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        swept.append(name)
    return swept


class RealNodes:
    """Start real nodes against a control plane; :meth:`stop` removes everything they made."""

    def __init__(self, kubeconfig: Path, workdir: Path | None = None, *, kube_proxy: bool = True,
                 cluster_dns: bool = True):
        if os.geteuid() != 0:
            raise PermissionError("real nodes need root (network namespaces, mounts, cgroups)")
        self.cluster = _read_kubeconfig(kubeconfig)
        self.netns = NetworkNamespace()
        self._owned_workdir = workdir is None
        # Unix sockets (containerd's, the kubelet's pods API) must fit ~104 bytes: a short folder.
        self.workdir = Path(workdir or Path(tempfile.gettempdir()) / self.netns.name).resolve()
        if len(str(self.workdir)) > 40:
            raise ValueError(f"the real nodes' folder must be short (unix socket paths): {self.workdir}")
        self.nodes: dict[str, RealNode] = {}
        self.binaries: dict[str, Path] = {}
        self.kubectl_binary: Path | None = None
        self.proxy_port = 0
        self._archives: dict[str, Path] = {}
        self._started = False
        self._next_index = 0  # node n gets 10.231.0.<n> and 10.232.<n>.0/24, never reused in a run
        self.kube_proxy = kube_proxy
        """Run one kube-proxy (iptables mode, inside the namespace) so pods reach Services' ClusterIPs."""
        self._kube_proxy: ManagedProcess | None = None
        self.cluster_dns = cluster_dns
        """Run CoreDNS (inside the namespace, at ``CLUSTER_DNS_IP``) for the pods' Service and pod names."""
        self._dns: ManagedProcess | None = None
        self.timings: dict[str, float] = {}

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert self.kubectl_binary is not None
        proc = subprocess.run([str(self.kubectl_binary), f"--kubeconfig={self.cluster.kubeconfig}", *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def _prepare(self) -> None:
        if self._started:
            return
        began = time.monotonic()
        self.binaries = ensure_node_binaries()  # raises with the reason when a build fails
        self.kubectl_binary = ensure_binaries(("kubectl",)) / "kubectl"
        self.timings["binaries_s"] = time.monotonic() - began
        for tool in ("nsenter", "ip", "umount"):
            if shutil.which(tool) is None:
                raise FileNotFoundError(f"real nodes need {tool} on PATH")
        if shutil.which("runc") is None:
            raise FileNotFoundError("real nodes need runc on PATH (Debian: apt-get install runc)")
        sweep_stale_runs()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "owner.json").write_text(
            json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid()), "netns": self.netns.name}))
        self.netns.create()
        self._started = True
        self.proxy_port = self.netns.proxy_to_host(self.cluster.server_port).port
        # The apiserver reaches kubelets, pods and ClusterIPs here through its egress proxy.
        register_route(self.cluster.kubeconfig, self.netns.name, self.netns.path,
                       [f"{NODE_NET}.0/24", f"{POD_NET}.0.0/16", SERVICE_CIDR])

    def load_image(self, ref: str) -> None:
        """Make a podman image available on every node (now and started later), under the same name."""
        inspect = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", ref],
                                 capture_output=True, text=True)
        if inspect.returncode != 0:
            raise FileNotFoundError(f"podman has no image {ref}: {inspect.stderr.strip()}")
        image_id = inspect.stdout.strip()[:12]
        folder = cache_root() / "images" / "realnode"
        folder.mkdir(parents=True, exist_ok=True)
        safe = ref.replace("/", "_").replace(":", "_")
        archive = folder / f"{safe}-{image_id}.oci.tar"
        if not archive.exists():
            partial = archive.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            saved = subprocess.run(["podman", "save", "--format", "oci-archive", "-o", str(partial), ref],
                                   capture_output=True, text=True)
            if saved.returncode != 0:
                raise RuntimeError(f"podman save {ref} failed: {saved.stderr.strip()}")
            os.replace(partial, archive)
            # one archive per repository: older images' (3 GB each for the runtime) would fill the disk
            repository = ref.rsplit(":", 1)[0].replace("/", "_").replace(":", "_")
            for older in folder.glob(f"{repository}_*.oci.tar"):
                if older != archive:
                    older.unlink(missing_ok=True)
        self._archives[ref] = archive
        for node in self.nodes.values():
            if node.spec.images:
                self.import_into(node, archive, ref)

    def add_archive(self, ref: str, archive: Path) -> None:
        """Import an OCI archive as ``ref`` into every node (now and started later), after those loaded so far."""
        self._archives[ref] = archive
        for node in self.nodes.values():
            if node.spec.images:
                self.import_into(node, archive, ref)

    def archive_of(self, ref: str) -> Path:
        """The OCI archive :meth:`load_image` made of ``ref``."""
        return self._archives[ref]

    def expose_host_port(self, host_port: int, address: str = HOST_SERVICES_IP) -> str:
        """Make ``127.0.0.1:<host_port>`` of the host reachable as ``<address>:<host_port>`` inside the
        namespace, from the nodes' processes and from pods (e.g. a registry on the host's loopback);
        returns ``"<address>:<port>"``."""
        self._prepare()
        self._ensure_address(address)
        proxy = self.netns.proxy_to_host(host_port, listen_address=address, listen_port=host_port)
        return f"{address}:{proxy.port}"

    @property
    def certs_dir(self) -> Path:
        """containerd's ``config_path`` of every node: ``<registry>/hosts.toml`` (see :meth:`mirror_registries`)."""
        return self.workdir / "certs.d"

    def mirror_registries(self, endpoint: str, registries: Sequence[str] = ("_default", "docker.io")) -> None:
        """Every node's containerd pulls images of ``registries`` from ``endpoint`` (``host:port``, plain HTTP,
        inside the namespace) and from nowhere else: ``docker.io/curlimages/curl`` becomes
        ``http://<endpoint>/v2/curlimages/curl/...``. ``_default`` covers every registry not named.
        containerd reads these files at each pull, so nodes started before see them too."""
        self._prepare()
        for registry in registries:
            folder = self.certs_dir / registry
            folder.mkdir(parents=True, exist_ok=True)
            # `server` alone: no fallback to the registry's real host (there is no route to it anyway)
            (folder / "hosts.toml").write_text(
                f'server = "http://{endpoint}"\n\n[host."http://{endpoint}"]\n  capabilities = ["pull", "resolve"]\n')

    def loaded_archives(self) -> list[Path]:
        return list(self._archives.values())

    def import_into(self, node: RealNode, archive: Path, ref: str | None = None) -> None:
        if ref is None:
            ref = next((r for r, a in self._archives.items() if a == archive), None)
        # --discard-unpacked-layers: keep only the unpacked snapshot, not a second copy of every layer
        # (the runtime image would take 13 GB a node instead of 6.5)
        args = ["images", "import", "--local", "--discard-unpacked-layers", "--snapshotter", "overlayfs"]
        if ref is not None:
            args += ["--index-name", ref]
        # a large image (the runtime's: 6.5 GB) takes minutes: allow ~20 MB/s on top of the usual two
        proc = node.ctr(*args, str(archive), timeout=120 + archive.stat().st_size / 20e6)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr images import {archive} into {node.name} failed: {proc.stderr.strip()}")

    def start(self, specs: Sequence[NodeSpec | str], *, timeout: float = 180) -> list[RealNode]:
        """Start one node per spec (a name alone means no labels/taints/resources), wait until all are Ready."""
        started = []
        try:
            for item in specs:
                started.append(self.begin(NodeSpec(item) if isinstance(item, str) else item))
            # image imports dominate a start: the nodes do them side by side (no process
            # outlives a worker thread: see start_runtime)
            with ThreadPoolExecutor(max_workers=min(4, len(started) or 1)) as pool:
                for future in [pool.submit(node.import_images) for node in started]:
                    future.result()
            for node in started:
                node.start_kubelet()
            for node in started:
                self.settle(node, timeout)
            self.ensure_kube_proxy()
        except BaseException:
            for node in started:
                self.keep_kubelet_log(node)
            raise
        return started

    # A start in steps, for callers that must not hold one thread through a node's image imports (the
    # realnode provisioner): begin and start_kubelet/ensure_kube_proxy on the thread that owns the processes
    # (they die with it), import_images and settle on any.
    def begin(self, spec: NodeSpec) -> RealNode:
        """Register a node (its address, its folder) and start its containerd; not yet its kubelet."""
        self._prepare()
        if spec.name in self.nodes:
            raise ValueError(f"node {spec.name} exists already")
        self._next_index += 1
        if self._next_index > 250:
            raise ValueError("at most 250 real nodes per run")
        node = RealNode(spec, self._next_index, self)
        self.netns.add_address(node.ip)
        self.nodes[spec.name] = node
        node.start_runtime()
        return node

    def settle(self, node: RealNode, timeout: float = 180) -> None:
        """Wait until a started kubelet's node is Ready, then set its labels and extended resources."""
        node.wait_ready(timeout)
        node.apply_node_status()

    def ensure_kube_proxy(self) -> None:
        """The namespace's shared services, once a node exists: kube-proxy and the cluster DNS."""
        if not self.nodes:
            return
        first = next(iter(self.nodes.values()))
        if self.kube_proxy and self._kube_proxy is None:
            self._start_kube_proxy(first)
        if self.cluster_dns and self._dns is None:
            self._start_cluster_dns(first)

    def _start_cluster_dns(self, node: RealNode) -> None:
        """CoreDNS's ``kubernetes`` plugin answers ``cluster.local`` (Services, headless pods, reverse
        lookups) from the apiserver; every other name is refused (no ``forward``: no way out)."""
        folder = self.workdir / "coredns"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(node.root / "kubelet.kubeconfig", folder / "kubeconfig")  # outlives remove_node
        self._ensure_address(CLUSTER_DNS_IP)
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
        self._dns = self._start_in_namespace(
            "coredns", [str(self.binaries["coredns"]), "-conf", str(folder / "Corefile")], folder,
            "http://127.0.0.1:10254/health")

    def _start_in_namespace(self, name: str, argv: list[str], folder: Path, health_url: str) -> ManagedProcess:
        """Start one of the namespace's shared services and wait until its health URL (inside the
        namespace) answers."""
        proc = ManagedProcess(name, [*self.netns.exec_prefix(), *argv], folder)
        proc.start()

        def healthy() -> bool:
            proc.check_alive()
            probe = subprocess.run(
                [*self.netns.exec_prefix(), "python3", "-c",
                 f"import urllib.request;urllib.request.urlopen({health_url!r},timeout=2)"],
                capture_output=True)
            return probe.returncode == 0

        wait_until(healthy, 60, f"{name} {health_url}", interval=0.5)
        return proc

    def _ensure_address(self, address: str) -> None:
        """Give the namespace's node device ``address`` unless it has it already."""
        if f"{address}/" not in self.netns.ip("-o", "addr", "show", "dev", self.netns.NODE_DEVICE):
            self.netns.add_address(address)

    def keep_kubelet_log(self, node: RealNode) -> None:
        """Copy a failed node's kubelet log beside the run's folder (which goes on stop)."""
        with contextlib.suppress(Exception):
            node_log = node.logs / "kubelet.log"
            if node_log.exists():
                shutil.copy(node_log, self.workdir.parent / f"{self.workdir.name}-{node.name}-kubelet.log")

    def _start_kube_proxy(self, node: RealNode) -> None:
        """One kube-proxy for the whole namespace: every node shares its iptables, so one writes the rules.

        ``masqueradeAll``: without br_netfilter a reply between two pods on one bridge
        would skip the DNAT's reverse translation; SNAT to the gateway routes it back.
        """
        folder = self.workdir / "kube-proxy"
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
        self._kube_proxy = self._start_in_namespace(
            "kube-proxy", [str(self.binaries["kube-proxy"]), f"--config={folder / 'config.yaml'}", "--v=1"], folder,
            "http://127.0.0.1:10256/healthz")

    def remove_node(self, name: str) -> None:
        """Stop one node (everything it runs), delete its Node object and give back its address."""
        node = self.nodes.pop(name)
        node.stop()
        shutil.rmtree(node.root, ignore_errors=True)
        self.kubectl("delete", "node", name, "--ignore-not-found", "--wait=false", check=False)
        with contextlib.suppress(RuntimeError):
            self.netns.ip("addr", "del", f"{node.ip}/32", "dev", self.netns.NODE_DEVICE)

    def __getitem__(self, name: str) -> RealNode:
        return self.nodes[name]

    def stop(self, *, delete_nodes: bool = True) -> None:
        """Stop every node, delete its Node object, remove the namespace and the run's folder."""
        if self._kube_proxy is not None:
            self._kube_proxy.stop()
            self._kube_proxy = None
        if self._dns is not None:
            self._dns.stop()
            self._dns = None
        for node in self.nodes.values():
            node.stop()
        if delete_nodes and self.kubectl_binary is not None:
            for name in self.nodes:
                self.kubectl("delete", "node", name, "--ignore-not-found", "--wait=false", check=False)
        unregister_route(self.cluster.kubeconfig, self.netns.name)
        self.netns.delete()
        leftovers = mounts_under(self.workdir)
        if leftovers:
            raise RuntimeError(f"mounts left under {self.workdir}: {leftovers}")
        if self._owned_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._started = False

    def __enter__(self) -> RealNodes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
