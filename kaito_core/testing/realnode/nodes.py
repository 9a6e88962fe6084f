"""The nodes of one run (:class:`RealNodes`): their network namespace, images, registry mirror, start and stop."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kaito_core.testing.build import cache_root, ensure_binaries
from kaito_core.testing.build_node import ensure_node_binaries
from kaito_core.testing.components import SERVICE_CIDR
from kaito_core.testing.egress import register_route, unregister_route
from kaito_core.testing.netns import NetworkNamespace
from kaito_core.testing.process import ManagedProcess
from kaito_core.testing.realnode.common import HOST_SERVICES_IP, NODE_NET, POD_NET, mounts_under
from kaito_core.testing.realnode.node import RealNode
from kaito_core.testing.realnode.services import ensure_address, start_cluster_dns, start_kube_proxy
from kaito_core.testing.realnode.spec import NodeSpec, _read_kubeconfig
from kaito_core.testing.realnode.sweep import _start_time, sweep_stale_runs


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
        """CoreDNS for the pods' Service and pod names (see :func:`.services.start_cluster_dns`)."""
        self._dns = start_cluster_dns(self.netns, self.workdir, self.binaries, node)

    def _ensure_address(self, address: str) -> None:
        """Give the namespace's node device ``address`` unless it has it already."""
        ensure_address(self.netns, address)

    def keep_kubelet_log(self, node: RealNode) -> None:
        """Copy a failed node's kubelet log beside the run's folder (which goes on stop)."""
        with contextlib.suppress(Exception):
            node_log = node.logs / "kubelet.log"
            if node_log.exists():
                shutil.copy(node_log, self.workdir.parent / f"{self.workdir.name}-{node.name}-kubelet.log")

    def _start_kube_proxy(self, node: RealNode) -> None:
        """One kube-proxy for the whole namespace (see :func:`.services.start_kube_proxy`)."""
        self._kube_proxy = start_kube_proxy(self.netns, self.workdir, self.binaries, node)

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
