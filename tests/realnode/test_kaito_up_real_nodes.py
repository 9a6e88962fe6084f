"""The README's first command in its real-node spelling, then the seed walkthrough to its last step.

``./dev up --real-nodes --apply examples/*.yaml`` runs as a user runs it (a child process, its own
state folder); the test then does what the walkthrough says, with the built kubectl on ``PATH`` and
the printed ``KUBECONFIG``: ``kubectl get workspace``, ``kubectl get svc``, and the verbatim
``kubectl run -it --rm --restart=Never curl --image=curlimages/curl -- curl -X POST http://$CLUSTERIP/chat``
(under a pseudo-terminal, as in a shell). Then the rest of the seeds: the official ``openai`` client
(through ``kubectl port-forward``), the tuning Job's adapter in the registry, the adapter Workspace
answering differently at strength 0 after its pod rolled; no route out of the nodes' namespace;
delete leaves no Machine or GPU node; Ctrl-C leaves no process, mount or namespace.

The tests of this module run in order against one ``kaito up``.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import seed_support

from kaito_core.testing.netns import list_kaito_netns
from kaito_core.testing.process import wait_until
from kaito_core.testing.realnode import mounts_under, processes_mentioning

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
WS, ADAPTER_WS, TUNING_WS = "workspace-phi-3-mini", "workspace-phi-3-mini-adapter", "workspace-tuning-phi-3"
# The walkthrough's last step, exactly as the README (and the seed's walkthrough) writes it.
WALKTHROUGH = """export CLUSTERIP=$(kubectl get svc workspace-phi-3-mini -o jsonpath="{.spec.clusterIPs[0]}")
kubectl run -it --rm --restart=Never curl --image=curlimages/curl -- curl -X POST http://$CLUSTERIP/chat \\
  -H "accept: application/json" -H "Content-Type: application/json" -d "{\\"prompt\\":\\"YOUR QUESTION HERE\\"}"
"""


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    log: Path
    kubeconfig: Path
    kubectl_binary: Path
    netns: str
    folder: Path
    registry: str
    env: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.kubectl_binary), *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def json(self, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl(*args, "-o", "json").stdout)
        return out

    def conditions(self, name: str) -> dict[str, dict[str, Any]]:
        ws = self.json("get", "workspace", name)
        return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}

    def is_true(self, name: str, kind: str) -> bool:
        return self.conditions(name).get(kind, {}).get("status") == "True"

    def pods(self, workspace: str) -> list[dict[str, Any]]:
        return list(self.json("get", "pods", "-l", f"kaito.sh/workspace={workspace}")["items"])

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _printed(log: Path, pattern: str) -> str:
    match = re.search(pattern, log.read_text(errors="replace"))
    assert match, f"kaito up did not print {pattern!r}:\n{log.read_text(errors='replace')[-3000:]}"
    return match.group(1)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    state = tmp_path_factory.mktemp("kaito-up") / ".kaito"
    log = state.parent / "kaito-up.log"
    began = time.monotonic()
    command = "./dev up --real-nodes --apply examples/*.yaml " f"--state-dir {state} --status-interval 5"
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is None and "Press Ctrl-C" in log.read_text(errors="replace"), 1800,
                   "kaito up to print its walkthrough", interval=1)
        kubectl = Path(_printed(log, r"alias kubectl=(\S+)"))
        bin_dir = state.parent / "bin"
        bin_dir.mkdir()
        (bin_dir / "kubectl").symlink_to(kubectl)
        kubeconfig = Path(_printed(log, r"export KUBECONFIG=(\S+)"))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        handle = Up(proc, log, kubeconfig, kubectl, _printed(log, r"network namespace (kaito-[0-9a-f]+)"),
                    Path(_printed(log, r"folder (\S+?);")), _printed(log, r"local registry (127\.0\.0\.1:\d+)"), env)
        handle.figures["up_to_walkthrough_s"] = round(time.monotonic() - began, 1)
        yield handle
        print(f"\n[kaito-up-real] {json.dumps(handle.figures, default=str)}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(180)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_in_terminal(command: str, env: dict[str, str], timeout: float = 300) -> str:
    """Run ``command`` in bash on a pseudo-terminal (``kubectl run -it`` wants one); return what it printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(["bash", "-c", command], stdin=follower, stdout=follower, stderr=follower, env=env,
                            start_new_session=True)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"timed out: {b''.join(chunks).decode(errors='replace')[-2000:]}")
    finally:
        os.close(leader)
        proc.wait(30)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def test_the_three_seeds_come_up_on_real_nodes(up: Up) -> None:
    began = time.monotonic()

    def done() -> bool:
        return (up.is_true(WS, "WorkspaceReady") and up.is_true(ADAPTER_WS, "WorkspaceReady")
                and up.is_true(TUNING_WS, "WorkspaceSucceeded"))

    def describe() -> str:
        return up.kubectl("get", "workspace,machines,pods", "-o", "wide", check=False).stdout + up.tail(2000)

    try:
        wait_until(done, 1800, "the three seed Workspaces", interval=3)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{describe()}") from exc
    up.figures["walkthrough_to_all_ready_s"] = round(time.monotonic() - began, 1)
    table = up.kubectl("get", "workspace").stdout
    print(f"\n{table}")
    assert table.split("\n")[0].split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY",
                                            "WORKSPACEREADY", "AGE"]
    for name in (WS, ADAPTER_WS):
        (pod,) = up.pods(name)
        pod_ready = {c["type"]: c for c in pod["status"]["conditions"]}["Ready"]
        assert pod_ready["status"] == "True"
        # InferenceReady follows a really Ready pod, never precedes it (RFC 3339 strings of one zone sort)
        assert pod_ready["lastTransitionTime"] <= up.conditions(name)["InferenceReady"]["lastTransitionTime"]
        node = up.json("get", "node", pod["spec"]["nodeName"])
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
        assert node["metadata"]["labels"]["kaito.sh/provisioner"] == "realnode"
        init = pod["status"]["initContainerStatuses"][0]
        assert init["name"] == "model-weights-downloader" and init["state"]["terminated"]["exitCode"] == 0
    machines = up.json("get", "machines.kaito.sh")["items"]
    assert len(machines) == 3, [m["metadata"]["name"] for m in machines]


def test_the_walkthrough_curl_answers_with_a_json_result(up: Up) -> None:
    for doc in ("README.md", "docs/quickstart.md"):  # the commands run here are the ones the docs show
        assert WALKTHROUGH in (ROOT / doc).read_text(), doc
    svc = up.kubectl("get", "svc", WS).stdout
    assert "80/TCP,29500/TCP" in svc and "ClusterIP" in svc, svc
    began = time.monotonic()
    printed = run_in_terminal(WALKTHROUGH, up.env)
    up.figures["walkthrough_curl_s"] = round(time.monotonic() - began, 1)
    line = next((ln for ln in printed.splitlines() if '"Result"' in ln), None)
    assert line is not None, printed
    answer = json.loads(line[line.index("{"):line.rindex("}") + 1])
    assert isinstance(answer["Result"], str) and answer["Result"], answer
    assert answer["model"] == "phi-3-mini-4k-instruct"
    assert up.kubectl("get", "pod", "curl", check=False).returncode != 0  # --rm took it away
    # the Service by its name too (the cluster DNS), from a pod of another namespace; read through
    # `kubectl logs` (attaching without a terminal races a container this quick)
    up.kubectl("create", "namespace", "elsewhere")
    up.kubectl("run", "byname", "-n", "elsewhere", "--restart=Never", "--image=curlimages/curl", "--", "curl", "-sS",
               "--retry", "5", "--retry-all-errors", "-X", "POST", f"http://{WS}.default.svc.cluster.local/chat",
               "-H", "Content-Type: application/json", "-d", '{"prompt":"YOUR QUESTION HERE"}')
    wait_until(lambda: up.json("get", "pod", "byname", "-n", "elsewhere")["status"].get("phase")
               in ("Succeeded", "Failed"), 180, "the by-name curl pod", interval=1)
    by_name = up.kubectl("logs", "byname", "-n", "elsewhere")
    assert '"Result"' in by_name.stdout, (by_name.stdout, by_name.stderr)
    (pod,) = up.pods(WS)
    up.figures["gpu_node_rss_mib"] = {
        k: round(v / 2**20) for k, v in seed_support.folder_rss_bytes(up.folder / pod["spec"]["nodeName"]).items()}


class PortForward:
    def __init__(self, up: Up, service: str):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen([str(up.kubectl_binary), "port-forward", f"svc/{service}", f"{self.port}:80"],
                                     env=up.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_until(self._open, 60, f"kubectl port-forward svc/{service}")

    def _open(self) -> bool:
        assert self.proc.poll() is None, self.proc.stdout.read() if self.proc.stdout else ""
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_the_openai_client_gets_answers_streamed_and_not(up: Up) -> None:
    import openai

    with PortForward(up, WS) as forward:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{forward.port}/v1", api_key="unused", timeout=120)
        reply = client.chat.completions.create(model="phi-3-mini-4k-instruct", max_tokens=8,
                                               messages=[{"role": "user", "content": "What is Kubernetes?"}])
        assert reply.choices[0].message.content and reply.usage is not None
        stream = client.chat.completions.create(model="phi-3-mini-4k-instruct", max_tokens=8, stream=True,
                                                messages=[{"role": "user", "content": "What is Kubernetes?"}])
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        assert len(pieces) >= 2 and "".join(pieces), pieces


def test_the_tuning_job_pushed_its_adapter_to_the_registry(up: Up) -> None:
    # the seed's output image, ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1, through the "*" mirror
    request = urllib.request.Request(f"http://{up.registry}/v2/image_name_here/manifests/0.0.1", method="GET",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        manifest = json.loads(response.read())
    assert manifest["annotations"]["sh.kaito.model.name"] == "phi-3-mini-128k-instruct", manifest
    job = up.json("get", "job", TUNING_WS)
    assert job["status"].get("succeeded") == 1, job["status"]


def _completion(port: int) -> dict[str, Any]:
    body = json.dumps({"model": "phi-3-mini-128k-instruct", "prompt": "What is the capital of France?",
                       "max_tokens": 12, "temperature": 0, "logprobs": 1}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        choice: dict[str, Any] = json.loads(response.read())["choices"][0]
        return choice


def test_strength_zero_rolls_the_adapter_pod_and_changes_the_answer(up: Up) -> None:
    (before,) = up.pods(ADAPTER_WS)
    assert [c["name"] for c in before["spec"]["initContainers"]] == ["model-weights-downloader",
                                                                     "adapter-phi-3-adapter"]
    with PortForward(up, ADAPTER_WS) as forward:
        at_one = _completion(forward.port)
    up.kubectl("patch", "workspace", ADAPTER_WS, "--type=json",
               "-p", json.dumps([{"op": "replace", "path": "/inference/adapters/0/strength", "value": "0.0"}]))
    began = time.monotonic()

    def rolled() -> bool:
        pods = up.pods(ADAPTER_WS)
        return (len(pods) == 1 and pods[0]["metadata"]["name"] != before["metadata"]["name"]
                and any(c["type"] == "Ready" and c["status"] == "True" for c in pods[0]["status"]["conditions"])
                and up.is_true(ADAPTER_WS, "InferenceReady"))

    wait_until(rolled, 600, "the adapter pod to roll and be Ready", interval=2)
    up.figures["strength_roll_s"] = round(time.monotonic() - began, 1)
    with PortForward(up, ADAPTER_WS) as forward:
        at_zero = _completion(forward.port)
    assert at_one != at_zero, "strength 0 and 1 answered alike: the adapter was not applied"


def test_nothing_is_routed_out_of_the_nodes_namespace(up: Up) -> None:
    assert up.netns in list_kaito_netns()
    routes = subprocess.run(["ip", "-n", up.netns, "route", "show"], capture_output=True, text=True).stdout
    assert "default" not in routes, routes
    probe = subprocess.run(["ip", "-n", up.netns, "route", "get", "1.1.1.1"], capture_output=True, text=True)
    assert probe.returncode != 0 and "unreachable" in probe.stderr.lower(), (probe.stdout, probe.stderr)
    # from inside a pod: its default route ends at the node's bridge, which has nowhere to send it
    (pod,) = up.pods(WS)
    script = ("import socket,sys\ntry:\n socket.create_connection(('1.1.1.1',80),timeout=5)\n"
              "except OSError as e:\n print(type(e).__name__, e.errno); sys.exit(0)\nsys.exit(1)")
    out = up.kubectl("exec", pod["metadata"]["name"], "--", "python", "-c", script, check=False)
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "TimeoutError" not in out.stdout  # refused at once (unreachable), not sent and unanswered


def test_deleting_the_workspaces_leaves_no_machine_or_gpu_node(up: Up) -> None:
    gpu_nodes = [m["metadata"]["name"] for m in up.json("get", "machines.kaito.sh")["items"]]
    up.kubectl("delete", "workspace", WS, ADAPTER_WS, TUNING_WS, "--wait=false")
    began = time.monotonic()

    def nothing_left() -> bool:
        nodes = [n["metadata"]["name"] for n in up.json("get", "nodes")["items"]]
        return (not up.json("get", "machines.kaito.sh")["items"] and not up.json("get", "workspaces")["items"]
                and nodes == ["kaito-system-0"]
                and not up.json("get", "pods", "-l", "kaito.sh/workspace")["items"])

    wait_until(nothing_left, 300, "no Workspace, Machine, GPU node or pod left", interval=2)
    up.figures["delete_to_nothing_left_s"] = round(time.monotonic() - began, 1)
    for name in gpu_nodes:  # the nodes' processes and mounts went with them
        assert processes_mentioning(str(up.folder / name)) == []
        assert mounts_under(up.folder / name) == []


def test_ctrl_c_leaves_no_process_mount_or_namespace(up: Up) -> None:
    os.killpg(up.proc.pid, signal.SIGINT)
    assert up.proc.wait(180) == 0, up.tail()
    assert "nothing left running" in up.tail(500)
    assert up.netns not in list_kaito_netns()
    assert processes_mentioning(str(up.folder)) == []
    assert mounts_under(up.folder) == []
    assert not up.folder.exists()
    host, port = up.registry.rsplit(":", 1)
    with socket.socket() as sock:
        assert sock.connect_ex((host, int(port))) != 0, "the local registry still listens"
    assert processes_mentioning(str(up.kubeconfig.parent)) == []  # the control plane's processes
