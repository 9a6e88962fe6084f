"""``helm template`` output passes ``kubectl apply --dry-run=server`` against the test control plane, with the
GPU plumbing (device plugin, GPU and node feature discovery) on and off."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kaito_core.testing import KUBERNETES_VERSION, Cluster, ensure_binaries

pytestmark = pytest.mark.e2e

CHART = Path(__file__).parents[2] / "deploy" / "charts" / "kaito-core"


@pytest.mark.parametrize("sets", [
    ["gpu-feature-discovery.enabled=true"],
    ["nvidiaDevicePlugin.enabled=false"],
], ids=["gpu-plumbing-on", "gpu-plumbing-off"])
def test_rendered_chart_passes_server_dry_run(kube_cluster: Cluster, kube_namespace: str, sets: list[str]) -> None:
    helm = ensure_binaries(("helm",)) / "helm"
    args = [str(helm), "template", "kaito-core", str(CHART), "--namespace", kube_namespace, "--include-crds",
            "--kube-version", KUBERNETES_VERSION, "--set", "provisioner=simulated"]
    for item in sets:
        args += ["--set", item]
    rendered = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    proc = kube_cluster.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", "-", input=rendered,
                                check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    applied = proc.stdout
    for kind_name in ("daemonset.apps/nvidia-device-plugin-daemonset", "deployment.apps/kaito-core"):
        assert (kind_name in applied) == (kind_name != "daemonset.apps/nvidia-device-plugin-daemonset"
                                          or "nvidiaDevicePlugin.enabled=false" not in sets), applied
    if "gpu-feature-discovery.enabled=true" in sets:
        assert "daemonset.apps/kaito-core-gpu-feature-discovery-gpu-feature-discovery" in applied, applied
