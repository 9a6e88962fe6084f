"""The seed example, verbatim, served on a real node the operator provisions (the ``realnode`` provisioner).

``kubectl apply -f examples/kaito_workspace_phi_3.yaml`` with the operator running in process: its
Machine becomes a real kubelet + containerd node named after it (the runtime and curl images imported
into that node's containerd after it starts, before its kubelet does); the weights init container
really pulls a tiny random-weight model, published under the preset's artifact name, from Debian's
registry on the host's loopback (reached at ``HOST_SERVICES_IP`` inside the nodes' namespace); the
server really answers ``/health``; InferenceReady turns True only once that pod is Ready. A kaito-curl
pod then posts the seed's body to the Service's ClusterIP; deleting the Workspace leaves no Machine and
no node.

The registry speaks plain HTTP at an address inside the namespace, so the operator is told so
(``insecure_registries``), as a platform team with an in-cluster registry without TLS would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import images_support
import pytest
import seed_support
from kaito_presets import default_catalog
from registry_support import start_registry

from kaito_core.controllers.machine.settings import MachineControllerSettings
from kaito_core.controllers.workspace.settings import WorkspaceSettings
from kaito_core.engine import ManagerSettings
from kaito_core.manager.operator import Operator
from kaito_core.manager.settings import OperatorSettings, WebhookSettings
from kaito_core.provisioning.realnode import RealNodeProvisioner, RealNodeSettings
from kaito_core.testing.clusters import Cluster
from kaito_core.testing.realnode import HOST_SERVICES_IP, RealNodes
from kaito_core.testing.waiting import eventually

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "kaito_workspace_phi_3.yaml"
WS = "workspace-phi-3-mini"
PRESET = "phi-3-mini-4k-instruct"
NS = "default"


def kubectl_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return out


def is_true(obj: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


runtime_images = images_support.runtime_images


@pytest.fixture(scope="module")
def runtime_image(request: pytest.FixtureRequest) -> str:
    """The runtime image this tree builds (built if it changed); ``KAITO_REALNODE_RUNTIME_IMAGE`` overrides."""
    if os.environ.get("KAITO_REALNODE_RUNTIME_IMAGE"):
        return os.environ["KAITO_REALNODE_RUNTIME_IMAGE"]
    return str(request.getfixturevalue("runtime_images")["runtime"].tag)


@pytest.fixture(scope="module")
def registry_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    for registry in start_registry(tmp_path_factory.mktemp("seed-registry"), None):
        yield int(registry.host.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from kaito_presets.runtime.tiny import build_tiny_model

    torch.set_num_threads(1)
    return build_tiny_model(tmp_path_factory.mktemp("tiny-phi3"))


@contextlib.asynccontextmanager
async def operator_with(cluster: Cluster, provisioner: RealNodeProvisioner,
                        workspace: WorkspaceSettings) -> AsyncIterator[Operator]:
    settings = OperatorSettings(
        provisioner="realnode", namespace="kaito-system", webhook=WebhookSettings(enabled=False),
        manager=ManagerSettings(http_port=None, handle_signals=False, graceful_shutdown_timeout=5),
        workspace=workspace,
        machine=MachineControllerSettings(poll_interval=1.0, gc_enabled=False,
                                          machine_selector=f"kaito.sh/workspacenamespace={NS}"))
    cluster.kubectl("create", "namespace", "kaito-system", check=False)
    operator = await Operator.create(settings, kubeconfig=cluster.kubeconfig, provisioner=provisioner)  # type: ignore[arg-type]
    task = asyncio.create_task(operator.run())
    try:
        await eventually(lambda: operator.manager.ready or task.done(), 60, message="operator ready")
        if task.done():
            task.result()
        yield operator
    finally:
        operator.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


async def test_the_seed_workspace_serves_chat_from_a_real_node_and_leaves_nothing(
    kube_cluster: Cluster, runtime_image: str, curl_image: str, registry_port: int, tiny_model: Path,
) -> None:
    from kaito_presets.runtime.weights import push_oci

    figures: dict[str, Any] = {}
    tag = default_catalog().model(PRESET).weights.tag
    push_oci(tiny_model, f"127.0.0.1:{registry_port}/kaito/kaito-{PRESET}:{tag}")
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "deploy" / "crds"))
    kube_cluster.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "crd/machines.kaito.sh",
                         "--timeout=60s")
    nodes = RealNodes(kube_cluster.kubeconfig)
    try:
        registry_inside = nodes.expose_host_port(registry_port)
        began = time.monotonic()
        await asyncio.to_thread(nodes.load_image, runtime_image)  # podman save, cached by image id
        figures["runtime_archive_s"] = round(time.monotonic() - began, 1)
        await asyncio.to_thread(nodes.load_image, curl_image)
        runtime_tag = runtime_image.rsplit(":", 1)[1]
        provisioner = RealNodeProvisioner(RealNodeSettings(start_timeout=900), nodes=nodes)
        workspace = WorkspaceSettings(image_registry="localhost", image_tag=runtime_tag,
                                      weights_registry=f"{registry_inside}/kaito", default_runtime="transformers",
                                      insecure_registries=[HOST_SERVICES_IP],
                                      requeue_seconds=5)
        async with operator_with(kube_cluster, provisioner, workspace):
            applied = time.monotonic()
            kube_cluster.kubectl("apply", "-f", str(SEED))  # verbatim: the default namespace
            seen: list[tuple[float, bool, bool]] = []  # (t, InferenceReady, a pod Ready)

            def pods() -> list[dict[str, Any]]:
                return list(kubectl_json(kube_cluster, "get", "pods", "-n", NS, "-l",
                                         f"kaito.sh/workspace={WS}")["items"])

            def inference_ready() -> bool:
                ws = kubectl_json(kube_cluster, "get", "workspace", WS, "-n", NS)
                ready, pod_ready = is_true(ws, "InferenceReady"), any(is_true(p, "Ready") for p in pods())
                seen.append((time.monotonic() - applied, ready, pod_ready))
                return ready

            def describe() -> str:
                ws = kubectl_json(kube_cluster, "get", "workspace", WS, "-n", NS)
                return json.dumps({"workspace": ws.get("status"), "pods": [p.get("status") for p in pods()],
                                   "provisioner": provisioner.timings}, default=str)[-3000:]

            await eventually(lambda: asyncio.to_thread(inference_ready), 1500, interval=1.0,
                             message="InferenceReady of the seed Workspace", describe=describe)
            figures["apply_to_inference_ready_s"] = round(time.monotonic() - applied, 1)
            figures["provisioner"] = provisioner.timings
            # never InferenceReady while no real pod was Ready
            assert all(pod_ready for _, ready, pod_ready in seen if ready), seen
            (pod,) = pods()
            ws_obj = kubectl_json(kube_cluster, "get", "workspace", WS, "-n", NS)
            ready_at = {c["type"]: c["lastTransitionTime"] for c in pod["status"]["conditions"]}["Ready"]
            inference_at = {c["type"]: c["lastTransitionTime"] for c in ws_obj["status"]["conditions"]}
            assert ready_at <= inference_at["InferenceReady"], (ready_at, inference_at)  # RFC 3339, one zone
            node_name = pod["spec"]["nodeName"]
            machines = kubectl_json(kube_cluster, "get", "machines.kaito.sh", "-l", f"kaito.sh/workspace={WS}")["items"]
            assert [m["metadata"]["name"] for m in machines] == [node_name]
            node = nodes[node_name]
            init = pod["status"]["initContainerStatuses"][0]
            assert init["name"] == "model-weights-downloader", init
            assert init["state"]["terminated"]["exitCode"] == 0, init
            figures["weights_init_log_tail"] = node.pod_log(NS, pod["metadata"]["name"], init["name"])[-300:]
            node_obj = kubectl_json(kube_cluster, "get", "node", node_name)
            assert node_obj["status"]["allocatable"]["nvidia.com/gpu"] == "1"
            assert node_obj["metadata"]["labels"]["kaito.sh/machine"] == node_name
            assert node_obj["metadata"]["labels"]["kaito.sh/provisioner"] == "realnode"

            cluster_ip = kubectl_json(kube_cluster, "get", "service", WS, "-n", NS)["spec"]["clusterIP"]
            body = json.dumps({"prompt": "YOUR QUESTION HERE"})
            script = (f"curl -sS --max-time 120 --retry 10 --retry-delay 2 --retry-all-errors -X POST "
                      f"http://{cluster_ip}/chat -H 'Content-Type: application/json' -d '{body}'")
            client = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "seed-curl", "namespace": NS},
                      "spec": {"nodeName": node_name, "restartPolicy": "Never", "automountServiceAccountToken": False,
                               "terminationGracePeriodSeconds": 1, "tolerations": [{"operator": "Exists"}],
                               "containers": [{"name": "curl", "image": curl_image, "imagePullPolicy": "Never",
                                               "command": ["sh", "-c", script]}]}}
            kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(client))

            def curl_phase() -> str:
                return str(kubectl_json(kube_cluster, "get", "pod", "seed-curl", "-n", NS)["status"].get("phase"))

            asked = time.monotonic()
            await eventually(lambda: asyncio.to_thread(lambda: curl_phase() in ("Succeeded", "Failed")), 300,
                             interval=1.0, message="the curl pod to finish")
            log = node.pod_log(NS, "seed-curl", "curl")
            assert curl_phase() == "Succeeded", log
            answer = json.loads(log)
            assert isinstance(answer, dict) and isinstance(answer["Result"], str), answer
            figures["curl_pod_s"] = round(time.monotonic() - asked, 1)
            figures["answer"] = answer["Result"][:80]
            figures["node_rss_mib"] = {k: round(v / 2**20) for k, v in seed_support.node_rss_bytes(node).items()}
            kube_cluster.kubectl("delete", "pod", "seed-curl", "-n", NS, "--wait=false")

            await kubelet_killed_then_restarted(kube_cluster, node, figures)
            await bad_weights_then_fixed(kube_cluster, registry_port, tiny_model, figures)
            await oom_killed_then_fixed(kube_cluster, figures)
            assert [m["metadata"]["name"] for m in kubectl_json(
                kube_cluster, "get", "machines.kaito.sh", "-l", f"kaito.sh/workspace={WS}")["items"]] == [node_name]

            deleting = time.monotonic()
            kube_cluster.kubectl("delete", "workspace", WS, "-n", NS, "--wait=false")

            def nothing_left() -> bool:
                left = kubectl_json(kube_cluster, "get", "machines.kaito.sh", "-l", f"kaito.sh/workspace={WS}")["items"]
                node_gone = kube_cluster.kubectl("get", "node", node_name, check=False).returncode != 0
                return not left and node_gone and node_name not in nodes.nodes
            await eventually(lambda: asyncio.to_thread(nothing_left), 180, interval=1.0,
                             message="no Machine and no node left")
            figures["delete_to_nothing_left_s"] = round(time.monotonic() - deleting, 1)
            assert kube_cluster.kubectl("get", "workspace", WS, "-n", NS, check=False).returncode != 0
    finally:
        print(f"\n[realnode-seed] {json.dumps(figures, default=str)}")
        kube_cluster.kubectl("delete", "workspace", WS, "-n", NS, "--wait=false", check=False)
        kube_cluster.kubectl("delete", "pod", "seed-curl", "-n", NS, "--force", "--grace-period=0", check=False)
        nodes.stop()


def conditions(cluster: Cluster) -> dict[str, dict[str, Any]]:
    ws = kubectl_json(cluster, "get", "workspace", WS, "-n", NS)
    return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}


async def until(cluster: Cluster, what: str, predicate: Any, timeout: float = 600) -> None:
    def describe() -> str:
        pods = kubectl_json(cluster, "get", "pods", "-n", NS, "-l", f"kaito.sh/workspace={WS}")["items"]
        return json.dumps({"conditions": conditions(cluster), "pods": [p.get("status") for p in pods]},
                          default=str)[-3000:]
    await eventually(lambda: asyncio.to_thread(predicate), timeout, interval=1.0, message=what, describe=describe)


def ready(cluster: Cluster) -> bool:
    return conditions(cluster).get("WorkspaceReady", {}).get("status") == "True"


def restart_pods(cluster: Cluster) -> None:
    cluster.kubectl("delete", "pods", "-n", NS, "-l", f"kaito.sh/workspace={WS}", "--wait=false")


async def kubelet_killed_then_restarted(cluster: Cluster, node: Any, figures: dict[str, Any]) -> None:
    """kill -9 of the kubelet: the node goes NotReady and the Workspace says so; a restart makes it Ready."""
    node.kill_kubelet()
    killed = time.monotonic()
    await until(cluster, "the Workspace to see its node NotReady", lambda: not ready(cluster), 300)
    figures["kubelet_kill_to_workspace_not_ready_s"] = round(time.monotonic() - killed, 1)
    said = {k: (c["status"], c.get("reason"), c.get("message", "")[:160]) for k, c in conditions(cluster).items()}
    figures["after_kubelet_kill"] = said
    assert said["WorkspaceReady"][0] == "False"
    node.start_kubelet()  # from this (the test's) thread: the kubelet lives as long as it does
    await asyncio.to_thread(node.wait_ready, 180)
    await asyncio.to_thread(node.apply_node_status)  # the device plugin's re-registration: nvidia.com/gpu
    restarted = time.monotonic()
    await until(cluster, "the Workspace Ready again after the kubelet restart", lambda: ready(cluster), 600)
    figures["kubelet_restart_to_workspace_ready_s"] = round(time.monotonic() - restarted, 1)


async def bad_weights_then_fixed(cluster: Cluster, registry_port: int, tiny_model: Path,
                                 figures: dict[str, Any]) -> None:
    """The preset's artifact replaced by one of the wrong kind: the new pod's puller fails, and the Workspace
    says why (the puller's own message); the good artifact back, the pod recovers."""
    from kaito_presets.runtime.oci import push_adapter
    from kaito_presets.runtime.tiny import build_tiny_adapter
    from kaito_presets.runtime.weights import push_oci

    ref = f"127.0.0.1:{registry_port}/kaito/kaito-{PRESET}:{default_catalog().model(PRESET).weights.tag}"
    adapter = build_tiny_adapter(tiny_model, tiny_model.parent / "bad-weights-adapter")
    push_adapter(adapter, ref, model_name=PRESET)
    restart_pods(cluster)

    def failed() -> bool:
        inference = conditions(cluster).get("InferenceReady", {})
        return inference.get("status") == "False" and "kaito-" + PRESET in inference.get("message", "")

    await until(cluster, "InferenceReady False naming the bad artifact", failed, 300)
    inference = conditions(cluster)["InferenceReady"]
    figures["bad_weights"] = (inference.get("reason"), inference.get("message", "")[:240])
    push_oci(tiny_model, ref)
    restart_pods(cluster)
    await until(cluster, "the Workspace Ready with the good artifact back", lambda: ready(cluster), 600)


async def oom_killed_then_fixed(cluster: Cluster, figures: dict[str, Any]) -> None:
    """A namespace's LimitRange gives the pods less memory than the model needs: OOMKilled, said so."""
    limits = {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "tiny-memory", "namespace": NS},
              "spec": {"limits": [{"type": "Container", "default": {"memory": "150Mi"},
                                   "defaultRequest": {"memory": "100Mi"}}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(limits))
    try:
        restart_pods(cluster)

        def oom() -> bool:
            inference = conditions(cluster).get("InferenceReady", {})
            return inference.get("status") == "False" and "OOMKilled" in inference.get("message", "")

        await until(cluster, "InferenceReady False saying OOMKilled", oom, 300)
        inference = conditions(cluster)["InferenceReady"]
        figures["oom"] = (inference.get("reason"), inference.get("message", "")[:240])
    finally:
        cluster.kubectl("delete", "limitrange", "tiny-memory", "-n", NS, "--ignore-not-found")
    restart_pods(cluster)
    await until(cluster, "the Workspace Ready without the memory limit", lambda: ready(cluster), 600)
