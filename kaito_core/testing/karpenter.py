"""The real Karpenter controller, with its kwok cloud provider, against a test cluster.

Karpenter ships a cloud provider for exactly this (``sigs.k8s.io/karpenter/kwok``): its
"instances" are Node objects it creates itself, annotated ``kwok.x-k8s.io/node=fake`` so
that kwok (which the full :class:`~kaito_core.testing.ControlPlane` runs with that selector)
makes them act: Ready, leases, pods Running. Everything else is Karpenter's own code: the
NodeClaim lifecycle (launch, registration, initialization, liveness), its termination
finalizer, garbage collection, disruption and its provisioner.

:class:`KarpenterKwok` applies Karpenter's CRDs (from the Go module cache, the same release as
the binary), writes an instance-types file, starts ``karpenter-kwok`` with the cluster's admin
kubeconfig (the kwok provider's RBAC is then no concern of a test) and waits for its readiness
probe, which only passes once the NodePool and NodeClaim CRDs are served and its caches synced.

Instance types come from our GPU SKU catalog (:func:`instance_types_from_catalog`), so the
facts of a SKU (vCPUs, memory, GPUs) have one home; Karpenter's kwok provider names a Node's
``nvidia.com/gpu`` capacity after the instance type's resources.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

from kaito_core.testing.build import asset_dir, ensure_binaries, ensure_karpenter, karpenter_module_dir
from kaito_core.testing.process import ManagedProcess, wait_until

__all__ = [
    "KWOK_NODE_CLASS_GROUP",
    "KarpenterKwok",
    "crd_files",
    "instance_types_from_catalog",
    "kwok_instance_type",
    "kwok_node_class",
]

KWOK_NODE_CLASS_GROUP = "karpenter.kwok.sh"
GPU_RESOURCE = "nvidia.com/gpu"
#: The zone and capacity type every offering is sold in (a test cluster has one of each).
ZONE = "kaito-test-zone"
CAPACITY_TYPE = "on-demand"
_MiB = 2**20


class _Cluster(Protocol):
    @property
    def kubeconfig(self) -> Path: ...

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]: ...


def crd_files(module_dir: Path | None = None) -> list[Path]:
    """Karpenter's CRDs as its kwok provider's chart installs them, plus the KWOKNodeClass CRD.

    ``kwok/charts/crds`` are ``pkg/apis/crds`` with the kwok label domain restricted as well.
    """
    root = module_dir or karpenter_module_dir()
    files = sorted((root / "kwok" / "charts" / "crds").glob("*.yaml"))
    files += sorted((root / "kwok" / "apis" / "crds").glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no Karpenter CRDs under {root}/kwok: is the module download complete?")
    return files


def kwok_instance_type(name: str, *, vcpus: int, memory: int, gpus: int = 0, price: float = 1.0,
                       architecture: str = "amd64") -> dict[str, Any]:
    """One entry of the kwok provider's instance-types file (``INSTANCE_TYPES_FILE_PATH``).

    The shape is that of ``kwok/cloudprovider/instance_types.json``: one on-demand offering in
    :data:`ZONE`; ``memory`` in bytes.
    """
    resources = {"cpu": str(vcpus), "memory": f"{memory // _MiB}Mi"}
    if gpus:
        resources[GPU_RESOURCE] = str(gpus)
    return {
        "name": name,
        "offerings": [{
            "Price": price,
            "Available": True,
            "Requirements": [
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [CAPACITY_TYPE]},
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [ZONE]},
            ],
        }],
        "architecture": architecture,
        "operatingSystems": ["linux"],
        "resources": resources,
    }


def instance_types_from_catalog(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The kwok instance types of our GPU SKU catalog (every SKU, or those named)."""
    from kaito_presets import default_catalog  # the SKU facts' one home; only the test kit needs it here

    catalog = default_catalog()
    if names is None:
        skus = list(catalog.skus)
    else:
        skus = []
        for name in names:
            sku = catalog.find_sku(name)
            if sku is None:
                raise KeyError(f"instance type {name!r} is not in the GPU SKU catalog")
            skus.append(sku)
    # Karpenter picks the cheapest compatible offering; a price that grows with the GPUs keeps
    # that choice the one a cloud would make.
    return [kwok_instance_type(sku.name, vcpus=sku.vcpus, memory=sku.memory, gpus=sku.gpu_count,
                               price=float(sku.gpu_count), architecture="amd64") for sku in skus]


def kwok_node_class(name: str = "default", *, registration_delay: str | None = None) -> dict[str, Any]:
    """A KWOKNodeClass: the node class the kwok provider's NodeClaims must reference."""
    spec: dict[str, Any] = {}
    if registration_delay:
        spec["nodeRegistrationDelay"] = registration_delay
    return {"apiVersion": f"{KWOK_NODE_CLASS_GROUP}/v1alpha1", "kind": "KWOKNodeClass",
            "metadata": {"name": name}, "spec": spec}


def _free_port() -> int:
    from kaito_core.testing.controlplane import free_port

    return free_port()


@dataclass
class KarpenterKwok:
    """Karpenter (kwok provider) running against ``cluster``; a context manager, or start/stop.

    ``instance_types`` defaults to the whole GPU SKU catalog.
    """

    cluster: _Cluster
    instance_types: list[dict[str, Any]] | None = None
    workdir: Path | None = None
    start_timeout: float = 120.0
    log_level: str = "info"
    _process: ManagedProcess | None = field(default=None, init=False)
    _health_port: int = field(default=0, init=False)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log_path(self) -> Path:
        assert self._process is not None, "Karpenter has not been started"
        return self._process.log_path

    def apply_crds(self) -> None:
        for path in crd_files():
            self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        for crd in ("nodepools.karpenter.sh", "nodeclaims.karpenter.sh", "kwoknodeclasses.karpenter.kwok.sh"):
            self.cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")

    def apply(self, *manifests: Mapping[str, Any]) -> None:
        """Server-side apply objects (a node class, a NodePool) as the cluster admin."""
        for manifest in manifests:
            self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                                 input=json.dumps(manifest))

    def start(self) -> None:
        binary = ensure_karpenter()
        ensure_binaries(("kubectl",))
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kaito-karpenter-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        types_file = self.workdir / "instance-types.json"
        types = self.instance_types if self.instance_types is not None else instance_types_from_catalog()
        types_file.write_text(json.dumps(types, indent=1))
        self.apply_crds()
        self._health_port = _free_port()
        env = {
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "INSTANCE_TYPES_FILE_PATH": str(types_file),
            # one replica, outside any cluster: nothing to elect, no lease namespace to make
            "DISABLE_LEADER_ELECTION": "true",
            "METRICS_PORT": str(_free_port()),
            "HEALTH_PROBE_PORT": str(self._health_port),
            "LOG_LEVEL": self.log_level,
            # start a batch as soon as one pod is pending: a test does not wait for a batch to fill
            "BATCH_IDLE_DURATION": "100ms",
            "BATCH_MAX_DURATION": "2s",
            "PATH": os.environ.get("PATH", "") + os.pathsep + str(asset_dir()),
        }
        self._process = ManagedProcess("karpenter", [str(binary)], self.workdir, env=env)
        self._process.start()
        try:
            wait_until(lambda: self._check() and self._ready(), self.start_timeout, "Karpenter /readyz")
        except BaseException:
            self.stop()
            raise

    def _check(self) -> bool:
        assert self._process is not None
        return self._process.check_alive()

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self._health_port}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def check_alive(self) -> bool:
        """True while Karpenter runs; raises with the tail of its log once it has exited."""
        return self._check()

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines) if self._process else "(not started)"

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
