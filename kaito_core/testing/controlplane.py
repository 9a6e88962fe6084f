"""A real Kubernetes control plane on loopback, started the way envtest starts one.

``light`` mode runs etcd and kube-apiserver: enough to create, watch and
validate objects. ``full`` mode adds kube-controller-manager, kube-scheduler
and kwok (as kwokctl runs them), because without them no Deployment makes pods,
no Job runs, no ownerReference is garbage-collected, no namespace finishes
deleting, and no simulated node turns Ready.

Everything stops in reverse order, on :meth:`ControlPlane.stop`, at interpreter
exit, and (through the parent-death signal) even when the runner is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import yaml

from kaito_core.testing.build import ALL_BINARIES, ensure_binaries, kwok_stages_dir
from kaito_core.testing.certs import CertificateSet, make_certificates
from kaito_core.testing.components import (
    AUDIT_POLICY,
    SERVICE_IP,
    apiserver_args,
    controller_manager_args,
    etcd_args,
    kwok_args,
    scheduler_args,
)
from kaito_core.testing.egress import egress_selector_config, routes_dir
from kaito_core.testing.process import ManagedProcess, wait_until

__all__ = ["ControlPlane", "ControlPlaneMode", "free_port"]

class ControlPlaneMode(StrEnum):
    """How much of Kubernetes to run."""

    LIGHT = "light"  # etcd + kube-apiserver
    FULL = "full"  # + kube-controller-manager, kube-scheduler, kwok


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ControlPlane:
    """A local control plane; use as a context manager or call start/stop."""

    mode: ControlPlaneMode = ControlPlaneMode.FULL
    workdir: Path | None = None
    start_timeout: float = 120.0
    extra_apiserver_args: Sequence[str] = ()
    egress_proxy: bool = True
    """Run the apiserver's ``cluster`` egress through :mod:`kaito_core.testing.egress`, so that it reaches
    real nodes' kubelets, pods and Services inside their network namespace (``kubectl logs``, ``exec``,
    ``run -it``, ``port-forward``); other addresses are dialled as without it."""
    audit: bool = True
    """Write an audit log (Metadata level: who did what to which resource) to ``audit_log``;
    tests read it to compare the calls a component makes with the RBAC it is granted."""
    _processes: dict[str, ManagedProcess] = field(default_factory=dict, init=False)
    _owned_workdir: bool = field(default=False, init=False)
    _stopped: bool = field(default=True, init=False)

    # -- addresses, filled on start
    apiserver_port: int = field(default=0, init=False)
    etcd_port: int = field(default=0, init=False)
    _egress_socket: Path = field(default=Path(), init=False)
    certs: CertificateSet | None = field(default=None, init=False)
    binaries: Path | None = field(default=None, init=False)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def audit_log(self) -> Path:
        assert self.workdir is not None, "the control plane has not been started"
        return self.workdir / "logs" / "audit.log"

    @property
    def kubeconfig(self) -> Path:
        assert self.workdir is not None, "the control plane has not been started"
        return self.workdir / "kubeconfig"

    # -- lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        names = ALL_BINARIES if self.mode is ControlPlaneMode.FULL else ("kube-apiserver", "etcd", "kubectl")
        self.binaries = ensure_binaries(names)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kaito-controlplane-"))
            self._owned_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.certs = make_certificates(self.workdir / "pki", service_ip=SERVICE_IP)
        self.etcd_port = free_port()
        self.apiserver_port = free_port()
        self._write_kubeconfig()
        self._stopped = False
        atexit.register(self.stop)
        try:
            self._start_etcd()
            if self.egress_proxy:
                self._start_egress_proxy()
            self._start_apiserver()
            if self.mode is ControlPlaneMode.FULL:
                self._start_controller_manager()
                self._start_scheduler()
                self._start_kwok()
                self._wait_default_service_account()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process in reverse start order; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        for proc in reversed(list(self._processes.values())):
            proc.stop()
        self._processes.clear()
        if self.egress_proxy and self._egress_socket.name:
            self._egress_socket.unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self._owned_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def process(self, name: str) -> ManagedProcess:
        return self._processes[name]

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self._processes.items() if proc.pid is not None}

    # -- the pieces

    def _bin(self, name: str) -> str:
        assert self.binaries is not None
        return str(self.binaries / name)

    def _spawn(self, name: str, args: list[str]) -> ManagedProcess:
        assert self.workdir is not None
        proc = ManagedProcess(name, args, self.workdir / "logs")
        proc.start()
        self._processes[name] = proc
        return proc

    def _start_etcd(self) -> None:
        assert self.workdir is not None
        proc = self._spawn("etcd", etcd_args(self._bin("etcd"), self.workdir / "etcd", self.etcd_url, free_port()))
        wait_until(
            lambda: proc.check_alive() and _http_ok(f"{self.etcd_url}/health"),
            self.start_timeout,
            "etcd /health",
        )

    def _apiserver_args(self) -> list[str]:
        assert self.certs is not None and self.workdir is not None
        egress_config: Path | None = None
        if self.egress_proxy:
            egress_config = self.workdir / "egress-selector.yaml"
            egress_config.write_text(egress_selector_config(self._egress_socket))
        audit: tuple[Path, Path] | None = None
        if self.audit:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(AUDIT_POLICY)
            audit = (policy, self.audit_log)
        return apiserver_args(self._bin("kube-apiserver"), port=self.apiserver_port, etcd_url=self.etcd_url,
                              cert_dir=self.workdir / "pki", certs=self.certs, extra=self.extra_apiserver_args,
                              egress_config=egress_config, audit=audit)

    def _start_egress_proxy(self) -> None:
        assert self.workdir is not None
        # a short path: Unix socket names are limited to ~107 bytes, the workdir may be deep
        self._egress_socket = Path(tempfile.gettempdir()) / f"kaito-egress-{self.apiserver_port}.sock"
        for stale in Path(tempfile.gettempdir()).glob("kaito-egress-*.sock"):  # a kill -9 leaves its socket
            with socket.socket(socket.AF_UNIX) as probe, contextlib.suppress(OSError):
                if probe.connect_ex(str(stale)) != 0:
                    stale.unlink(missing_ok=True)
        folder = routes_dir(self.kubeconfig)
        folder.mkdir(exist_ok=True)
        self._spawn("egress-proxy", [sys.executable, "-m", "kaito_core.testing.egress",
                                     f"--socket={self._egress_socket}", f"--routes={folder}"])
        wait_until(self._egress_listening, self.start_timeout, "the egress proxy")

    def _egress_listening(self) -> bool:
        self._processes["egress-proxy"].check_alive()
        with socket.socket(socket.AF_UNIX) as sock:
            return sock.connect_ex(str(self._egress_socket)) == 0

    def _start_apiserver(self) -> None:
        proc = self._spawn("kube-apiserver", self._apiserver_args())
        wait_until(
            lambda: proc.check_alive() and self._readyz(), self.start_timeout, "kube-apiserver /readyz"
        )

    def _start_controller_manager(self) -> None:
        assert self.certs is not None
        self._spawn("kube-controller-manager", controller_manager_args(
            self._bin("kube-controller-manager"), self.kubeconfig, self.certs, free_port()))

    def _start_scheduler(self) -> None:
        self._spawn("kube-scheduler", scheduler_args(self._bin("kube-scheduler"), self.kubeconfig, free_port()))

    def _start_kwok(self) -> None:
        # kwok's fast stages, with our node status heartbeat in place of its 10-minute one
        # (see kwok/node-status-heartbeat.yaml for why).
        ours = sorted((Path(__file__).parent / "kwok").glob("*.yaml"))
        stages = sorted(str(path) for path in kwok_stages_dir().glob("*.yaml")
                        if path.name != "node-heartbeat-with-lease.yaml") + [str(path) for path in ours]
        health_port = free_port()
        proc = self._spawn("kwok", kwok_args(self._bin("kwok"), self.kubeconfig, health_port, stages))
        wait_until(
            lambda: proc.check_alive() and _http_ok(f"http://127.0.0.1:{health_port}/healthz"),
            self.start_timeout,
            "kwok /healthz",
        )
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._processes[name].check_alive()

    def _wait_default_service_account(self) -> None:
        # The controller manager is ready for work once its service-account controller ran.
        def has_default_sa() -> bool:
            self._processes["kube-controller-manager"].check_alive()
            return (
                self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            )

        wait_until(
            has_default_sa,
            self.start_timeout,
            "kube-controller-manager to create the default ServiceAccount",
            interval=0.25,
        )

    # -- helpers used by tests

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.certs is not None
        context = ssl.create_default_context(cafile=str(self.certs.ca_cert))
        context.load_cert_chain(str(self.certs.admin_cert), str(self.certs.admin_key))
        return context

    def _readyz(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.server}/readyz", context=self._ssl_context(), timeout=2
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _write_kubeconfig(self) -> None:
        assert self.certs is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kaito-local",
                    "cluster": {"server": self.server, "certificate-authority": str(self.certs.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(self.certs.admin_cert),
                        "client-key": str(self.certs.admin_key),
                    },
                }
            ],
            "contexts": [{"name": "kaito-local", "context": {"cluster": "kaito-local", "user": "admin"}}],
            "current-context": "kaito-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with this control plane against it."""
        binaries = self.binaries or ensure_binaries(("kubectl",))
        proc = subprocess.run(
            [str(binaries / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def restart_apiserver(self, downtime: float = 0.0) -> None:
        """Stop kube-apiserver and start it again on the same port (watch-recovery tests)."""
        import time

        self._processes["kube-apiserver"].stop()
        time.sleep(downtime)
        self._start_apiserver()

    def etcd_revision(self) -> int:
        body = _http_post_json(f"{self.etcd_url}/v3/kv/range", {"key": "AA=="})
        return int(body["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision so older resourceVersions expire (410 Gone)."""
        revision = self.etcd_revision()
        _http_post_json(f"{self.etcd_url}/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _http_post_json(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """etcd's gRPC gateway speaks JSON over HTTP: no etcdctl needed."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result
