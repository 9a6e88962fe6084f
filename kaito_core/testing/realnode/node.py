"""One real node (:class:`RealNode`): its containerd and kubelet, what tests look at, its teardown."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaito_core.testing.build import cache_root
from kaito_core.testing.process import ManagedProcess, wait_until
from kaito_core.testing.realnode.common import (
    _K8S_NS,
    _TASK_DIR,
    NODE_NET,
    POD_NET,
    _kill,
    mounts_under,
    parse_cri_log,
    processes_mentioning,
)
from kaito_core.testing.realnode.config import write_configs
from kaito_core.testing.realnode.pause import _pause_archive
from kaito_core.testing.realnode.spec import NodeSpec
from kaito_core.testing.realnode.sweep import _remove_container_cgroups

if TYPE_CHECKING:
    from kaito_core.testing.realnode.nodes import RealNodes


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
        write_configs(self, self._owner)

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
