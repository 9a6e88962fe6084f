"""The seed examples, applied unchanged with kubectl, reach what a user expects; teardown, BYO nodes,
invalid Workspaces and adapter changes, on the full control plane with kwok nodes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from workspace_support import (
    EXAMPLES,
    condition,
    eventually,
    get_workspace_columns,
    is_true,
    kubectl,
    machines_of,
    running_controller,
)

from kaito_core.controllers.workspace import CONTROLLERREVISION, MACHINE, WORKSPACE
from kaito_core.engine import CONFIGMAP, DEPLOYMENT, EVENT, JOB, NODE, POD, SERVICE, Client
from kaito_core.testing import Cluster

pytestmark = pytest.mark.e2e


async def get_ws(client: Client, ns: str, name: str) -> dict[str, Any] | None:
    return await client.get_or_none(WORKSPACE, name, ns)


async def wait_true(client: Client, ns: str, name: str, type_: str, timeout: float = 90) -> dict[str, Any]:
    async def check() -> bool:
        return is_true(await get_ws(client, ns, name), type_)

    try:
        await eventually(check, timeout, message=f"{name} {type_}")
    except AssertionError:
        ws = await get_ws(client, ns, name)
        raise AssertionError(f"{name} {type_} not True: {json.dumps((ws or {}).get('status'), indent=1)}") from None
    ws = await get_ws(client, ns, name)
    assert ws is not None
    return ws


async def running_pods(client: Client, ns: str, name: str) -> list[dict[str, Any]]:
    pods = (await client.list(POD, ns, label_selector={"kaito.sh/workspace": name})).items
    return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


async def test_inference_examples_become_ready(kube_cluster: Cluster, kube_namespace: str) -> None:
    ns = kube_namespace
    async with running_controller(kube_cluster, ns) as (_, client):
        for example, name in (("kaito_workspace_phi_3.yaml", "workspace-phi-3-mini"),
                              ("kaito_workspace_phi_3_with_adapters.yaml", "workspace-phi-3-mini-adapter")):
            await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(EXAMPLES / example))
            ws = await wait_true(client, ns, name, "WorkspaceReady")
            for type_ in ("ResourceReady", "InferenceReady", "WorkspaceSucceeded"):
                assert is_true(ws, type_), (type_, ws["status"])
            assert ws["status"]["state"] == "Ready"
            columns = await get_workspace_columns(kube_cluster, ns, name)
            assert columns["NAME"] == name
            assert columns["INSTANCE"] == "Standard_NC6s_v3"
            assert (columns["RESOURCEREADY"], columns["INFERENCEREADY"], columns["WORKSPACEREADY"]) == \
                ("True", "True", "True"), columns

            # One Machine for one node; the workload runs on it; kwok reports the pod Running.
            machines = await machines_of(client, ns, name)
            assert len(machines) == 1
            node = machines[0]["status"]["nodeName"]
            assert ws["status"]["workerNodes"] == [node]
            assert machines[0]["spec"]["instanceType"] == "Standard_NC6s_v3"
            assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in machines[0]["spec"]["taints"]
            selector_labels = {"apps": "phi-3"} if name == "workspace-phi-3-mini" else {"apps": "phi-3-adapter"}
            assert selector_labels.items() <= machines[0]["metadata"]["labels"].items()
            pods = await running_pods(client, ns, name)
            assert len(pods) == 1 and pods[0]["spec"]["nodeName"] == node

            # The Service a user curls: named after the Workspace, ClusterIP, 80 and 29500.
            svc = await client.get(SERVICE, name, ns)
            assert svc["spec"]["type"] == "ClusterIP"
            assert sorted(p["port"] for p in svc["spec"]["ports"]) == [80, 29500]
            printed = await kubectl(kube_cluster, "get", "svc", name, "-n", ns)
            assert "80/TCP,29500/TCP" in printed

            deployment = await client.get(DEPLOYMENT, name, ns)
            pod_spec = deployment["spec"]["template"]["spec"]
            container = pod_spec["containers"][0]
            assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
            assert container["readinessProbe"]["httpGet"]["path"] == "/health"
            assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod_spec["volumes"])
            assert any(t.get("key") == "sku" for t in pod_spec["tolerations"])
            if name == "workspace-phi-3-mini-adapter":
                init = pod_spec["initContainers"]
                assert [c["name"] for c in init] == ["model-weights-downloader", "adapter-phi-3-adapter"]
                assert "/mnt/adapter/phi-3-adapter" in init[1]["command"]
                env = {e["name"]: e.get("value") for e in container["env"]}
                assert env["phi-3-adapter"] == "1.0"
                assert json.loads(env["KAITO_ADAPTER_STRENGTHS"]) == {"phi-3-adapter": 1.0}

            # The default inference config, made from the preset, rides in the pod template (no ConfigMap).
            config = deployment["spec"]["template"]["metadata"]["annotations"]["kaito.sh/inference-config"]
            assert "served_model_name: phi-3-mini" in config
            assert await client.get_or_none(CONFIGMAP, f"{name}-inference-config", ns) is None

            # Events tell the story.
            events = (await client.list(EVENT, ns)).items
            reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == name}
            assert {"MachineCreated", "InferenceReady"} <= reasons, reasons


async def test_tuning_example_runs_to_success(kube_cluster: Cluster, kube_namespace: str) -> None:
    ns = kube_namespace
    name = "workspace-tuning-phi-3"
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(EXAMPLES / "kaito_workspace_tuning_phi_3.yaml"))
        ws = await wait_true(client, ns, name, "JobStarted")
        ws = await wait_true(client, ns, name, "WorkspaceSucceeded")
        assert is_true(ws, "ResourceReady") and is_true(ws, "WorkspaceReady")
        assert ws["status"]["state"] == "Succeeded"
        job = await client.get(JOB, name, ns)
        assert job["status"].get("succeeded") == 1
        spec = job["spec"]["template"]["spec"]
        weights, init = spec["initContainers"]
        assert weights["name"] == "model-weights-downloader"
        assert init["name"] == "data-downloader"
        assert any(a.startswith("https://huggingface.co/datasets/philschmid") for a in init["command"])
        names = [c["name"] for c in spec["containers"]]
        assert names == ["tuning", "pusher"]
        trainer, pusher = spec["containers"]
        assert trainer["command"][trainer["command"].index("--method") + 1] == "qlora"
        assert "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1" in pusher["command"]
        assert any(v.get("secret", {}).get("secretName") == "ACR_REGISTRY_SECRET_HERE" for v in spec["volumes"])
        cm = await client.get(CONFIGMAP, f"{name}-tuning-config", ns)
        assert "load_in_4bit: true" in cm["data"]["training_config.yaml"]

        columns = await get_workspace_columns(kube_cluster, ns, name, wide=True)
        assert columns["JOBSTARTED"] == "True" and columns["WORKSPACESUCCEEDED"] == "True", columns
        assert columns["RESOURCEREADY"] == "True" and columns["WORKSPACEREADY"] == "True", columns
        assert columns["INFERENCEREADY"] == "", columns  # a tuning Workspace serves nothing
        # The transitions were recorded in order: JobStarted came before success.
        events = [e for e in (await client.list(EVENT, ns)).items if e["involvedObject"].get("name") == name]
        reasons = [e["reason"] for e in sorted(events, key=lambda e: (e["firstTimestamp"], e["metadata"]["name"]))]
        assert "JobStarted" in reasons and "JobSucceeded" in reasons, reasons


async def test_byo_nodes_need_no_machine(kube_cluster: Cluster, kube_namespace: str, make_gpu_node: Any) -> None:
    ns = kube_namespace
    node = await make_gpu_node(labels={"apps": "phi-3"}, instance_type="Standard_NC6s_v3")
    node_name = node.metadata.name
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(EXAMPLES / "kaito_workspace_phi_3.yaml"))
        ws = await wait_true(client, ns, "workspace-phi-3-mini", "WorkspaceReady")
        assert ws["status"]["workerNodes"] == [node_name]
        assert await machines_of(client, ns, "workspace-phi-3-mini") == []
        pods = await running_pods(client, ns, "workspace-phi-3-mini")
        assert [p["spec"]["nodeName"] for p in pods] == [node_name]

        # Level-based and quiet once converged: nothing is written again (no status or apply loop).
        async def versions() -> list[str]:
            objs = [await client.get(WORKSPACE, "workspace-phi-3-mini", ns),
                    await client.get(DEPLOYMENT, "workspace-phi-3-mini", ns),
                    await client.get(SERVICE, "workspace-phi-3-mini", ns)]
            return [o["metadata"]["resourceVersion"] for o in objs]

        before = await versions()
        await asyncio.sleep(6)  # longer than the not-ready requeue (5 s)
        assert await versions() == before


async def test_delete_leaves_nothing_behind(kube_cluster: Cluster, kube_namespace: str) -> None:
    ns = kube_namespace
    name = "workspace-phi-3-mini"
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(EXAMPLES / "kaito_workspace_phi_3.yaml"))
        await wait_true(client, ns, name, "WorkspaceReady")
        machines = await machines_of(client, ns, name)
        assert len(machines) == 1
        await kubectl(kube_cluster, "delete", "workspace", name, "-n", ns, "--wait=false")

        async def nothing_left() -> bool:
            if await get_ws(client, ns, name) is not None or await machines_of(client, ns, name):
                return False
            for kind in (DEPLOYMENT, SERVICE, JOB, CONTROLLERREVISION):
                if (await client.list(kind, ns)).items:
                    return False
            owned = [c for c in (await client.list(CONFIGMAP, ns)).items
                     if c["metadata"]["name"] != "kube-root-ca.crt"]
            return not owned

        await eventually(nothing_left, 90, message="everything deleted")
        assert await client.get_or_none(MACHINE, machines[0]["metadata"]["name"]) is None
        node = machines[0]["status"]["nodeName"]
        await eventually(lambda: _node_gone(client, node), 30, message=f"node {node} deleted")


async def _node_gone(client: Client, name: str) -> bool:
    return await client.get_or_none(NODE, name) is None


async def test_invalid_workspace_gets_condition_event_and_nothing_else(kube_cluster: Cluster,
                                                                      kube_namespace: str) -> None:
    ns = kube_namespace
    name = "workspace-typo"
    manifest = (EXAMPLES / "kaito_workspace_phi_3.yaml").read_text() \
        .replace("workspace-phi-3-mini", name).replace("name: phi-3-mini-4k-instruct", "name: phi-3-mini-4k-instruc")
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", "-", input=manifest)

        async def failed() -> bool:
            cond = condition(await get_ws(client, ns, name), "WorkspaceReady")
            return cond is not None and cond["status"] == "False"

        await eventually(failed, 60, message="WorkspaceReady False")
        ws = await get_ws(client, ns, name)
        cond = condition(ws, "WorkspaceReady")
        assert cond is not None and cond["reason"] == "ValidationFailed"
        assert "unknown preset 'phi-3-mini-4k-instruc'" in cond["message"]
        assert "phi-3-mini-4k-instruct" in cond["message"]  # the validator's suggestion

        async def warned() -> bool:
            return any(e["type"] == "Warning" and e["reason"] == "ValidationFailed"
                       and e["involvedObject"].get("name") == name for e in (await client.list(EVENT, ns)).items)

        await eventually(warned, 30, message="Warning event")
        assert await machines_of(client, ns, name) == []
        for kind in (DEPLOYMENT, SERVICE, JOB):
            assert (await client.list(kind, ns)).items == []


async def test_changing_adapters_rolls_pods_and_keeps_machines(kube_cluster: Cluster, kube_namespace: str) -> None:
    ns = kube_namespace
    name = "workspace-phi-3-mini-adapter"
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(EXAMPLES / "kaito_workspace_phi_3_with_adapters.yaml"))
        await wait_true(client, ns, name, "WorkspaceReady")
        machines = sorted(m["metadata"]["uid"] for m in await machines_of(client, ns, name))
        before = await running_pods(client, ns, name)
        assert len(before) == 1
        old_hash = before[0]["metadata"]["labels"]["pod-template-hash"]

        ws = await client.get(WORKSPACE, name, ns)
        adapters = ws["inference"]["adapters"] + [
            {"source": {"name": "second-adapter", "image": "example.com/adapters/second:0.1"}, "strength": "1.0"}]
        await client.patch(WORKSPACE, name, {"inference": {"adapters": adapters}}, ns)

        async def rolled() -> bool:
            pods = await running_pods(client, ns, name)
            return (len(pods) == 1 and pods[0]["metadata"]["labels"]["pod-template-hash"] != old_hash
                    and is_true(await get_ws(client, ns, name), "WorkspaceReady"))

        await eventually(rolled, 90, message="pods rolled to the new adapters")
        pod = (await running_pods(client, ns, name))[0]
        assert pod["metadata"]["uid"] != before[0]["metadata"]["uid"]
        assert [c["name"] for c in pod["spec"]["initContainers"]] == [
            "model-weights-downloader", "adapter-phi-3-adapter", "adapter-second-adapter"]
        assert sorted(m["metadata"]["uid"] for m in await machines_of(client, ns, name)) == machines
        ws = await client.get(WORKSPACE, name, ns)
        assert ws["metadata"]["annotations"]["kaito.sh/revision"]
        revisions = (await client.list(CONTROLLERREVISION, ns)).items
        assert sorted(r["revision"] for r in revisions) == [1, 2]


async def test_tuning_input_change_replaces_the_job(kube_cluster: Cluster, kube_namespace: str) -> None:
    ns = kube_namespace
    name = "workspace-tuning-phi-3"
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(EXAMPLES / "kaito_workspace_tuning_phi_3.yaml"))
        await wait_true(client, ns, name, "WorkspaceSucceeded")
        first = await client.get(JOB, name, ns)
        machines = sorted(m["metadata"]["uid"] for m in await machines_of(client, ns, name))
        await client.patch(WORKSPACE, name, {"tuning": {"input": {"urls": ["https://example.com/other.parquet"]}}}, ns)

        async def replaced() -> bool:
            job = await client.get_or_none(JOB, name, ns)
            return (job is not None and job["metadata"]["uid"] != first["metadata"]["uid"]
                    and (job.get("status") or {}).get("succeeded") == 1
                    and is_true(await get_ws(client, ns, name), "WorkspaceSucceeded"))

        await eventually(replaced, 90, message="a new tuning job ran to completion")
        job = await client.get(JOB, name, ns)
        assert job["spec"]["template"]["spec"]["initContainers"][1]["command"][-1] == \
            "https://example.com/other.parquet"
        assert sorted(m["metadata"]["uid"] for m in await machines_of(client, ns, name)) == machines


async def test_count_change_scales_machines_and_replicas(kube_cluster: Cluster, kube_namespace: str) -> None:
    ns = kube_namespace
    name = "workspace-phi-3-mini"
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(EXAMPLES / "kaito_workspace_phi_3.yaml"))
        await wait_true(client, ns, name, "WorkspaceReady")
        (first,) = await machines_of(client, ns, name)
        (serving,) = await running_pods(client, ns, name)
        await client.patch(WORKSPACE, name, {"resource": {"count": 2}}, ns)

        async def scaled(n: int) -> bool:
            ws = await get_ws(client, ns, name)
            machines = [m for m in await machines_of(client, ns, name) if not m["metadata"].get("deletionTimestamp")]
            return (len(machines) == n and len((ws or {}).get("status", {}).get("workerNodes") or []) == n
                    and len(await running_pods(client, ns, name)) == n and is_true(ws, "WorkspaceReady"))

        await eventually(lambda: scaled(2), 90, message="two nodes, two replicas")
        pods = await running_pods(client, ns, name)
        assert len({p["spec"]["nodeName"] for p in pods}) == 2  # one replica per node
        # The replica that served before is still serving: adding a node rolled nothing.
        assert serving["metadata"]["uid"] in {p["metadata"]["uid"] for p in pods}
        await client.patch(WORKSPACE, name, {"resource": {"count": 1}}, ns)
        await eventually(lambda: scaled(1), 90, message="back to one node")
        assert [m["metadata"]["uid"] for m in await machines_of(client, ns, name)] == [first["metadata"]["uid"]]
        # Back to the first spec: its revision is the newest again.
        digest = (await client.get(WORKSPACE, name, ns))["metadata"]["annotations"]["kaito.sh/revision"]

        async def renumbered() -> bool:
            items = (await client.list(CONTROLLERREVISION, ns)).items
            revisions = {r["metadata"]["name"]: r["revision"] for r in items}
            return len(revisions) == 2 and revisions.get(f"{name}-{digest}") == 3

        await eventually(renumbered, 30, message="the first revision renumbered")


async def test_the_seeds_run_in_a_namespace_that_enforces_the_restricted_pod_security_profile(
    kube_cluster: Cluster, kube_namespace: str
) -> None:
    """The apiserver's PodSecurity admission refuses any pod of ours that is not "restricted" (the
    ReplicaSet and Job controllers then make none, and nothing gets Ready)."""
    ns = kube_namespace
    await kubectl(kube_cluster, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
                  "pod-security.kubernetes.io/enforce-version=latest")
    async with running_controller(kube_cluster, ns) as (_, client):
        for example in ("kaito_workspace_phi_3.yaml", "kaito_workspace_phi_3_with_adapters.yaml",
                        "kaito_workspace_tuning_phi_3.yaml"):
            await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(EXAMPLES / example))
        for name in ("workspace-phi-3-mini", "workspace-phi-3-mini-adapter"):
            await wait_true(client, ns, name, "WorkspaceReady", timeout=120)
        await wait_true(client, ns, "workspace-tuning-phi-3", "WorkspaceSucceeded", timeout=120)
        pods = (await client.list(POD, ns)).items
        assert len(pods) >= 3
        for pod in pods:
            spec = pod["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert spec["automountServiceAccountToken"] is False
            for container in spec["containers"] + spec.get("initContainers", []):
                assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                                        "capabilities": {"drop": ["ALL"]}}, container["name"]
