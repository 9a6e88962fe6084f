"""Real pods on real nodes: a kubelet + containerd + runc node runs what the scheduler places there."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from registry_support import start_registry

from kaito_core.testing.clusters import Cluster
from kaito_core.testing.netns import list_kaito_netns
from kaito_core.testing.nodes import GPU_RESOURCE, GPU_TAINT
from kaito_core.testing.process import wait_until
from kaito_core.testing.realnode import (
    CLUSTER_DNS_IP,
    NodeSpec,
    RealNodes,
    cgroup_dirs,
    mounts_under,
    processes_mentioning,
    sweep_stale_runs,
)

GPU_NODE = "real-gpu-a"  # the node the real_nodes fixture (conftest.py) starts

pytestmark = pytest.mark.realnode

GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Equal", "value": GPU_TAINT["value"],
                  "effect": GPU_TAINT["effect"]}


def pod_manifest(name: str, node: str, image: str, container: dict[str, Any], restart: str = "Never") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [GPU_TOLERATION],
            "restartPolicy": restart,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"image": image, "imagePullPolicy": "Never", **container}],
        },
    }


def kubectl_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return out


@pytest.fixture
def namespace(kube_cluster: Cluster) -> Any:
    name = f"rn-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_gpu_node_is_ready_with_its_labels_taint_and_gpu(real_nodes: RealNodes, kube_cluster: Cluster) -> None:
    node = kubectl_json(kube_cluster, "get", "node", GPU_NODE)
    assert node["metadata"]["labels"]["accelerator"] == "nvidia"
    assert node["status"]["capacity"][GPU_RESOURCE] == "1"
    assert node["status"]["allocatable"][GPU_RESOURCE] == "1"
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"] == "containerd://2.2.1"
    ready = real_nodes[GPU_NODE].ready_after
    rss = real_nodes[GPU_NODE].rss_bytes()
    print(f"\n[realnode] timings {real_nodes[GPU_NODE].timings}")
    print(f"\n[realnode] Ready {ready:.1f}s after start; RSS kubelet {rss['kubelet'] / 2**20:.0f} MiB, "
          f"containerd {rss['containerd'] / 2**20:.0f} MiB")


def test_a_pod_runs_to_completion_and_its_log_is_readable(
    real_nodes: RealNodes, kube_cluster: Cluster, namespace: str, curl_image: str
) -> None:
    manifest = pod_manifest("writer", GPU_NODE, curl_image, {
        "name": "main",
        "command": ["sh", "-c", "echo hello from $(hostname); echo done > /tmp/out; cat /tmp/out"],
        "resources": {"limits": {GPU_RESOURCE: "1"}},
    })
    began = time.monotonic()
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    def phase() -> str:
        return str(kubectl_json(kube_cluster, "get", "pod", "writer", "-n", namespace)["status"].get("phase"))

    wait_until(lambda: phase() in ("Succeeded", "Failed"), 120, "the writer pod to finish", interval=0.5)
    took = time.monotonic() - began
    pod = kubectl_json(kube_cluster, "get", "pod", "writer", "-n", namespace)
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert pod["spec"]["nodeName"] == GPU_NODE
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    log = real_nodes[GPU_NODE].pod_log(namespace, "writer", "main")
    assert log == "hello from writer\ndone\n"
    print(f"\n[realnode] pod created -> Succeeded in {took:.1f}s")


def test_kubectl_logs_exec_and_run_it_reach_the_real_node_through_the_apiserver(
    real_nodes: RealNodes, kube_cluster: Cluster, namespace: str, curl_image: str
) -> None:
    """The apiserver dials the kubelet inside the nodes' namespace through its egress proxy."""
    manifest = pod_manifest("talker", GPU_NODE, curl_image, {
        "name": "main", "command": ["sh", "-c", "echo first-line; exec sleep 3600"]}, restart="Always")
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    wait_until(lambda: kubectl_json(kube_cluster, "get", "pod", "talker", "-n", namespace)["status"]
               .get("phase") == "Running", 120, "talker Running", interval=0.5)
    logs = kube_cluster.kubectl("logs", "talker", "-n", namespace, check=False)
    assert logs.returncode == 0 and logs.stdout == "first-line\n", logs.stderr
    exec_ = kube_cluster.kubectl("exec", "talker", "-n", namespace, "--", "sh", "-c", "echo in-$(hostname)",
                                 check=False)
    assert exec_.returncode == 0 and exec_.stdout == "in-talker\n", exec_.stderr
    # `kubectl run -i --rm`: attach to a new pod's output, then delete it (the walkthrough's shape)
    run = kube_cluster.kubectl("run", "-i", "--rm", "--restart=Never", "once", f"--image={curl_image}",
                               "--image-pull-policy=Never", "-n", namespace,
                               f"--overrides={json.dumps({'spec': {'tolerations': [GPU_TOLERATION]}})}",
                               "--", "sh", "-c", "sleep 1; echo attached-output", check=False)
    assert run.returncode == 0, run.stderr
    assert "attached-output" in run.stdout, run.stdout
    assert kube_cluster.kubectl("get", "pod", "once", "-n", namespace, check=False).returncode != 0


def test_a_pod_of_curlimages_curl_pulls_from_the_local_registry_through_the_nodes_mirror(
    real_nodes: RealNodes, kube_cluster: Cluster, namespace: str, curl_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The walkthrough's ``--image=curlimages/curl``: containerd resolves docker.io to our registry only.

    On a node of its own that imports nothing (``images=False``): what runs there was pulled."""
    (node,) = real_nodes.start([NodeSpec("real-mirror", labels={"kaito.sh/test": "mirror"}, images=False)])
    try:
        for registry in start_registry(tmp_path_factory.mktemp("mirror-registry"), None):
            registry.push_podman_image(curl_image, "curlimages/curl:latest")
            real_nodes.mirror_registries(real_nodes.expose_host_port(registry.port))
            overrides = {"spec": {"nodeName": node.name}}
            run = kube_cluster.kubectl("run", "-i", "--rm", "--restart=Never", "pulled", "--image=curlimages/curl",
                                       "-n", namespace, f"--overrides={json.dumps(overrides)}",
                                       "--", "curl", "--version", check=False, timeout=180)
            assert run.returncode == 0, run.stderr
            assert run.stdout.startswith("curl "), run.stdout
            images = node.ctr("images", "ls", "-q").stdout.split()
            assert "docker.io/curlimages/curl:latest" in images, images
            # a registry nobody mirrors to us does not exist: the pull fails instead of leaving the machine
            other = kube_cluster.kubectl("run", "elsewhere", "--restart=Never", "--image=quay.io/nobody/nothing:1",
                                         "-n", namespace, f"--overrides={json.dumps(overrides)}", check=False)
            assert other.returncode == 0, other.stderr

            def waiting_reason() -> str:
                status = kubectl_json(kube_cluster, "get", "pod", "elsewhere", "-n", namespace)["status"]
                states = [c.get("state", {}) for c in status.get("containerStatuses") or []]
                return next((s["waiting"].get("reason", "") for s in states if "waiting" in s), "")

            wait_until(lambda: waiting_reason() in ("ErrImagePull", "ImagePullBackOff"), 120, "the pull to fail")
    finally:
        kube_cluster.kubectl("delete", "pod", "elsewhere", "-n", namespace, "--force", "--grace-period=0",
                             check=False)
        real_nodes.remove_node(node.name)


def test_pods_resolve_services_by_name_and_nothing_outside_the_cluster(
    real_nodes: RealNodes, kube_cluster: Cluster, namespace: str, curl_image: str
) -> None:
    """The cluster DNS (CoreDNS in the namespace): Services by short and full name; other names resolve nowhere."""
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "named"},
               "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 80}]}}
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(service))
    cluster_ip = kubectl_json(kube_cluster, "get", "service", "named", "-n", namespace)["spec"]["clusterIP"]
    script = ("getent hosts named | cut -d' ' -f1; getent hosts kubernetes.default.svc.cluster.local | cut -d' ' -f1;"
              " getent hosts huggingface.co || echo unresolved; grep ^nameserver /etc/resolv.conf")
    manifest = pod_manifest("resolver", GPU_NODE, curl_image, {"name": "main", "command": ["sh", "-c", script]})
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    try:
        wait_until(lambda: kubectl_json(kube_cluster, "get", "pod", "resolver", "-n", namespace)["status"]
                   .get("phase") in ("Succeeded", "Failed"), 120, "the resolver pod", interval=0.5)
    finally:
        log = kube_cluster.kubectl("logs", "resolver", "-n", namespace, check=False)
        print(f"\n[realnode] resolver: {log.stdout!r} {log.stderr!r}",
              kubectl_json(kube_cluster, "get", "pod", "resolver", "-n", namespace)["status"])
    lines = real_nodes[GPU_NODE].pod_log(namespace, "resolver", "main").split("\n")
    assert lines[:4] == [cluster_ip, "10.96.0.1", "unresolved", f"nameserver {CLUSTER_DNS_IP}"], lines


def test_a_long_running_pod_gets_ready_by_an_exec_probe(
    real_nodes: RealNodes, kube_cluster: Cluster, namespace: str, curl_image: str
) -> None:
    manifest = pod_manifest("server", GPU_NODE, curl_image, {
        "name": "main",
        "command": ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 3600"],
        "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1,
                           "failureThreshold": 1},
    }, restart="Always")
    began = time.monotonic()
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    def status() -> dict[str, Any]:
        return dict(kubectl_json(kube_cluster, "get", "pod", "server", "-n", namespace)["status"])

    wait_until(lambda: status().get("phase") == "Running", 120, "the server pod Running", interval=0.5)
    running_after = time.monotonic() - began
    # not Ready until the probe's file exists: the probe really runs in the container
    wait_until(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in status()["conditions"]),
               60, "the server pod Ready", interval=0.5)
    ready_after = time.monotonic() - began
    assert ready_after >= 2.0
    pod = status()
    assert pod["podIP"].startswith("10.232.")
    print(f"\n[realnode] pod Running after {running_after:.1f}s, Ready after {ready_after:.1f}s")


def test_kill_9_of_the_kubelet_makes_the_node_not_ready_and_a_restart_ready(real_nodes: RealNodes) -> None:
    node = real_nodes[GPU_NODE]
    node.kill_kubelet()
    assert not node.kubelet.running()
    began = time.monotonic()
    node.wait_not_ready(timeout=180)  # the node lifecycle controller's grace period
    not_ready_after = time.monotonic() - began
    node.start_kubelet()
    began = time.monotonic()
    node.wait_ready(timeout=120, interval=0.1)
    print(f"\n[realnode] NotReady {not_ready_after:.0f}s after kill -9; Ready {time.monotonic() - began:.1f}s "
          "after restart")
    kept = node.node_object()["status"]["capacity"].get(GPU_RESOURCE)  # type: ignore[index]
    print(f"[realnode] nvidia.com/gpu after the restart, before re-applying: {kept}")
    node.apply_node_status()  # a restarted kubelet may zero extended resources
    assert node.node_object()["status"]["capacity"][GPU_RESOURCE] == "1"  # type: ignore[index]


def test_stop_leaves_no_process_mount_netns_link_or_cgroup(kube_cluster: Cluster, curl_image: str) -> None:
    host_links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    before_links = {line.split(":")[1].strip() for line in host_links.splitlines()}
    nodes = RealNodes(kube_cluster.kubeconfig)
    folder = nodes.workdir
    try:
        nodes.load_image(curl_image)
        (node,) = nodes.start([NodeSpec("real-cleanup", labels={"kaito.sh/test": "cleanup"})])
        manifest = pod_manifest("sleeper", "real-cleanup", curl_image, {"name": "main", "command": ["sleep", "3600"]})
        kube_cluster.kubectl("apply", "-n", "default", "-f", "-", input=json.dumps(manifest))
        wait_until(lambda: kubectl_json(kube_cluster, "get", "pod", "sleeper", "-n", "default")["status"]
                   .get("phase") == "Running", 120, "sleeper Running", interval=0.5)
        ids = node.container_ids()
        assert len(ids) >= 2  # the sandbox and the container
        assert all(cgroup_dirs(f"/k8s.io/{cid}") for cid in ids), "containers run in /k8s.io/<id> cgroups"
        assert mounts_under(folder), "a running pod should have mounts under the node's folder"
        netns = nodes.netns.name
        assert netns in list_kaito_netns()
        assert f"kbr{node.index}" in nodes.netns.links()
        # kube-proxy's rules live in the run's namespace only; the host's iptables are untouched
        inside = subprocess.run([*nodes.netns.exec_prefix(), "iptables-save", "-t", "nat"],
                                capture_output=True, text=True)
        assert "KUBE-SERVICES" in inside.stdout, inside.stderr
        assert subprocess.run(["iptables", "-t", "nat", "-S", "KUBE-SERVICES"], capture_output=True).returncode != 0
    finally:
        nodes.stop()
        kube_cluster.kubectl("delete", "pod", "sleeper", "-n", "default", "--force", "--grace-period=0",
                             check=False)
    assert processes_mentioning(str(folder)) == []
    assert mounts_under(folder) == []
    assert netns not in list_kaito_netns()
    after_links = {line.split(":")[1].strip() for line in
                   subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()}
    assert after_links - before_links == set()
    assert not folder.exists()
    assert [path for cid in ids for path in cgroup_dirs(f"/k8s.io/{cid}")] == []
    for cid in ids:  # not even a process of a container survives (their cgroups are gone)
        assert processes_mentioning(cid) == []


_ORPHAN_SCRIPT = """
import json, sys, time
from pathlib import Path
from kaito_core.testing.process import wait_until
from kaito_core.testing.realnode import RealNodes
nodes = RealNodes(Path(sys.argv[1]))
nodes.load_image(sys.argv[2])
(node,) = nodes.start(["real-orphan"])
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan"},
       "spec": {"nodeName": "real-orphan", "terminationGracePeriodSeconds": 1, "containers": [
           {"name": "main", "image": sys.argv[2], "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}}
import subprocess
subprocess.run([str(nodes.kubectl_binary), f"--kubeconfig={sys.argv[1]}", "apply", "-n", "default", "-f", "-"],
               input=json.dumps(pod), text=True, check=True, capture_output=True)
wait_until(lambda: len(node.container_ids()) >= 2, 120, "the orphan pod's containers")
print(json.dumps({"folder": str(nodes.workdir), "netns": nodes.netns.name, "ids": node.container_ids()}), flush=True)
time.sleep(3600)
"""


def test_a_killed_runner_leaves_orphans_that_the_next_run_sweeps(kube_cluster: Cluster, curl_image: str) -> None:
    """kill -9 of the process that owns the nodes: its shims and containers outlive it; sweep_stale_runs removes all."""
    child = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, str(kube_cluster.kubeconfig), curl_image],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else "no output"
        run = json.loads(line)
    finally:
        child.kill()
        child.wait()
    folder = Path(run["folder"])
    wait_until(lambda: not [p for p in processes_mentioning(str(folder)) if "kubelet" in _cmdline(p)], 10,
               "the kubelet to die with its parent")
    assert processes_mentioning(str(folder)), "the shims outlive the runner (that is why the sweep exists)"
    assert run["netns"] in sweep_stale_runs()
    assert processes_mentioning(str(folder)) == []
    assert mounts_under(folder) == []
    assert run["netns"] not in list_kaito_netns()
    assert [path for cid in run["ids"] for path in cgroup_dirs(f"/k8s.io/{cid}")] == []
    assert not folder.exists()
    kube_cluster.kubectl("delete", "node", "real-orphan", "--wait=false", check=False)
    kube_cluster.kubectl("delete", "pod", "orphan", "-n", "default", "--force", "--grace-period=0", check=False)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_two_nodes_an_http_probe_pod_and_service_traffic_across_them(
    kube_cluster: Cluster, namespace: str, curl_image: str, base_image: str
) -> None:
    base = base_image
    with RealNodes(kube_cluster.kubeconfig) as nodes:
        nodes.load_image(base)
        nodes.load_image(curl_image)
        began = time.monotonic()
        a, b = nodes.start([NodeSpec("real-two-a", labels={"kaito.sh/test": "two"}),
                            NodeSpec("real-two-b", labels={"kaito.sh/test": "two"})])
        both_ready = time.monotonic() - began
        server = pod_manifest("web", a.name, base, {
            "name": "main",
            "command": ["sh", "-c", "mkdir -p /srv && echo served-by-$(hostname) > /srv/hello && "
                        "exec python3 -m http.server 8080 -d /srv"],
            "readinessProbe": {"httpGet": {"path": "/hello", "port": 8080}, "periodSeconds": 1},
        }, restart="Always")
        server["metadata"]["labels"] = {"app": "web"}
        kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(server))

        def web() -> dict[str, Any]:
            return dict(kubectl_json(kube_cluster, "get", "pod", "web", "-n", namespace)["status"])

        wait_until(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in web().get("conditions", [])),
                   120, "the web pod Ready by its http probe", interval=0.5)
        ip = web()["podIP"]
        assert ip.startswith(f"10.232.{a.index}.")
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
        kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(service))
        cluster_ip = kubectl_json(kube_cluster, "get", "service", "web", "-n", namespace)["spec"]["clusterIP"]
        # from the other node: the pod IP, then the Service (kube-proxy's DNAT); from the same node: the Service
        fetch = ("curl -sf --max-time 5 --retry 20 --retry-delay 1 --retry-all-errors http://{}/hello")
        for name, node, script in (
            ("client-b", b, f"{fetch.format(ip + ':8080')} && {fetch.format(cluster_ip)}"),
            ("client-a", a, fetch.format(cluster_ip)),
        ):
            client = pod_manifest(name, node.name, curl_image, {"name": "main", "command": ["sh", "-c", script]})
            kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(client))

        def phase(name: str) -> str:
            return str(kubectl_json(kube_cluster, "get", "pod", name, "-n", namespace)["status"].get("phase"))

        for name, node, lines in (("client-b", b, 2), ("client-a", a, 1)):
            wait_until(lambda n=name: phase(n) in ("Succeeded", "Failed"), 120, f"{name} to finish", interval=0.5)
            assert phase(name) == "Succeeded", node.pod_log(namespace, name, "main")
            assert node.pod_log(namespace, name, "main") == "served-by-web\n" * lines
        # removing one node takes everything it ran; the other keeps serving
        b_root = b.root
        nodes.remove_node(b.name)
        assert processes_mentioning(str(b_root)) == [] and mounts_under(b_root) == []
        assert kube_cluster.kubectl("get", "node", b.name, check=False).returncode != 0 or \
            kubectl_json(kube_cluster, "get", "node", b.name)["metadata"].get("deletionTimestamp")
        assert a.is_ready()
        print(f"\n[realnode] two nodes Ready {both_ready:.1f}s after start")
