"""The three ways tests reach a cluster: built here, an existing one, or K3s in Docker.

* default: :class:`~kaito_core.testing.controlplane.ControlPlane` built from source;
* ``KAITO_TEST_KUBECONFIG=/path``: any cluster the kubeconfig points at;
* ``KAITO_TEST_K3S=1`` where a Docker engine answers: a testcontainers K3s container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Protocol

from kaito_core.testing.build import asset_dir
from kaito_core.testing.controlplane import ControlPlane, ControlPlaneMode

__all__ = ["Cluster", "ExistingCluster", "cluster_from_environment"]


class Cluster(Protocol):
    """What tests need from a cluster, however it was started."""

    @property
    def kubeconfig(self) -> Path: ...

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ExistingCluster:
    """A cluster someone else runs; we neither start nor stop it."""

    def __init__(self, kubeconfig: Path, on_stop: Any = None):
        self._kubeconfig = kubeconfig
        self._on_stop = on_stop

    @property
    def kubeconfig(self) -> Path:
        return self._kubeconfig

    def start(self) -> None:
        if not self._kubeconfig.exists():
            raise FileNotFoundError(f"KAITO_TEST_KUBECONFIG={self._kubeconfig} does not exist")

    def stop(self) -> None:
        if self._on_stop is not None:
            self._on_stop()

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        built = asset_dir() / "kubectl"
        kubectl = str(built) if built.exists() else shutil.which("kubectl")
        if kubectl is None:
            raise FileNotFoundError(
                "kubectl is neither built (python -m kaito_core.testing kubectl) nor on PATH"
            )
        proc = subprocess.run(
            [kubectl, f"--kubeconfig={self._kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc


def _k3s_cluster() -> ExistingCluster:
    try:
        from testcontainers.k3s import K3SContainer
    except ImportError as exc:  # pragma: no cover - optional extra
        raise RuntimeError(
            "KAITO_TEST_K3S=1 needs `pip install kaito-core[docker]` and a Docker engine"
        ) from exc
    container = K3SContainer()
    container.start()
    path = Path(tempfile.mkdtemp(prefix="kaito-k3s-")) / "kubeconfig"
    path.write_text(container.config_yaml())
    return ExistingCluster(path, on_stop=container.stop)


def cluster_from_environment(mode: ControlPlaneMode = ControlPlaneMode.FULL) -> Cluster:
    """Pick the cluster the environment asks for; default: build and run one here."""
    kubeconfig = os.environ.get("KAITO_TEST_KUBECONFIG")
    if kubeconfig:
        return ExistingCluster(Path(kubeconfig))
    if os.environ.get("KAITO_TEST_K3S") == "1":
        return _k3s_cluster()
    return ControlPlane(mode=mode)
