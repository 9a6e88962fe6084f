"""The chart's GPU plumbing, as Kaito's chart ships it: the NVIDIA device plugin (on by default) and GPU
feature discovery with node feature discovery (off by default, for bring-your-own nodes), both tolerating
what kaito-core's GPU nodes carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_chart import helm, render

from kaito_core.api import GPU_RESOURCE, GPU_TAINT

__all__ = ["helm"]  # the module-scoped fixture, shared with test_chart (it renders the chart the same way)


def daemonsets(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "DaemonSet"}


def tolerates_gpu_nodes(pod: dict[str, Any]) -> bool:
    tolerations = pod.get("tolerations") or []
    taint = {"key": GPU_TAINT["key"], "operator": "Equal", "value": GPU_TAINT["value"], "effect": GPU_TAINT["effect"]}
    device = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    return taint in tolerations and device in tolerations


def test_defaults_as_kaito_device_plugin_on_feature_discovery_off(helm: Path) -> None:
    sets = daemonsets(render(helm))
    assert list(sets) == ["nvidia-device-plugin-daemonset"]
    pod = sets["nvidia-device-plugin-daemonset"]
    assert tolerates_gpu_nodes(pod)
    container = pod["containers"][0]
    assert container["image"].endswith("k8s-device-plugin:v0.18.2-12")
    assert container["volumeMounts"] == [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_both_on(helm: Path) -> None:
    docs = render(helm, "gpu-feature-discovery.enabled=true")
    sets = daemonsets(docs)
    gfd = next(pod for name, pod in sets.items() if name.endswith("gpu-feature-discovery"))
    worker = next(pod for name, pod in sets.items() if name.endswith("node-feature-discovery-worker"))
    assert "nvidia-device-plugin-daemonset" in sets
    # GFD labels the GPU nodes and NFD's worker publishes the labels: both must run on them.
    assert tolerates_gpu_nodes(gfd) and tolerates_gpu_nodes(worker)
    assert not any(name.endswith("device-plugin") and name != "nvidia-device-plugin-daemonset" for name in sets)


def test_both_off(helm: Path) -> None:
    assert daemonsets(render(helm, "nvidiaDevicePlugin.enabled=false")) == {}


def test_extra_tolerations_add_to_the_gpu_nodes_ones(helm: Path) -> None:
    pod = daemonsets(render(helm, "nvidiaDevicePlugin.tolerations[0].key=dedicated",
                            "nvidiaDevicePlugin.tolerations[0].operator=Exists"))["nvidia-device-plugin-daemonset"]
    assert tolerates_gpu_nodes(pod) and {"key": "dedicated", "operator": "Exists"} in pod["tolerations"]
