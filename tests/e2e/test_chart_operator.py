"""The operator as the Helm chart installs it: its RBAC, its webhook, leader election.

The chart's rendered manifests are applied to the local control plane; the
operator then runs as a separate process authenticated as the chart's
ServiceAccount (a TokenRequest token), so a verb missing from the ClusterRole
fails this test. Pods on kwok nodes run no containers, so the operator runs
here as a process instead of in its Deployment. The apiserver's audit log
records every call the ServiceAccount made; they are compared with the rules.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_core.testing import KUBERNETES_VERSION, ControlPlane, ensure_binaries, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "charts" / "kaito-core"
WEBHOOK = "validation.workspace.kaito.sh"


def _render(release: str, namespace: str) -> list[dict[str, Any]]:
    helm = ensure_binaries(("helm",)) / "helm"
    out = subprocess.run(
        [str(helm), "template", release, str(CHART), "--namespace", namespace, "--include-crds",
         "--kube-version", KUBERNETES_VERSION, "--set", "provisioner=simulated"],
        capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _wait(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
          log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the operator exited ({proc.returncode}) while waiting for {what}:\n"
                                 f"{log.read_text()[-4000:] if log else ''}")
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log.read_text()[-4000:] if log else ''}")


@pytest.fixture
def chart_install(kube_cluster: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not isinstance(kube_cluster, ControlPlane):
        pytest.skip("needs the local control plane (its CA and audit log)")
    # a letter first: a label value like "9531e1" would reach the apiserver as the number 95310 (YAML)
    run = "r" + uuid.uuid4().hex[:5]
    release, namespace, test_ns = f"kc{run}", f"kaito-{run}", f"chart-{run}"
    docs = _render(release, namespace)
    port = free_port()
    for doc in docs:
        if doc["kind"] == "ValidatingWebhookConfiguration":
            # The operator runs here, not behind the chart's Service: point the apiserver at it,
            # and only for this test's namespace so the rest of the suite is unaffected.
            hook = doc["webhooks"][0]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}/validate-workspace"}
            hook["namespaceSelector"] = {"matchLabels": {"kaito-chart-test": run}}
    kube_cluster.kubectl("create", "namespace", namespace)
    kube_cluster.kubectl("create", "namespace", test_ns)
    kube_cluster.kubectl("label", "namespace", test_ns, f"kaito-chart-test={run}")
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                         input="\n---\n".join(yaml.safe_dump(d) for d in docs if d["kind"] not in ("Deployment",)))
    sa = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    token = kube_cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=2h").stdout.strip()
    assert kube_cluster.certs is not None
    kubeconfig = tmp_path / "sa-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {"server": kube_cluster.server,
                                                  "certificate-authority": str(kube_cluster.certs.ca_cert)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
    }))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    http_port = free_port()
    # The chart's own arguments, with ports this machine has free and the local webhook endpoint.
    args = [a for a in args if not a.startswith(("--http-port", "--webhook-port", "--webhook-service"))]
    args += [f"--kubeconfig={kubeconfig}", f"--http-port={http_port}", f"--webhook-port={port}",
             "--log-format=json", "--log-level=info"]
    log = tmp_path / "operator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kaito_core.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "POD_NAME": f"operator-{run}"})
    try:
        yield {"cluster": kube_cluster, "namespace": namespace, "test_ns": test_ns, "proc": proc, "log": log,
               "http_port": http_port, "sa": f"system:serviceaccount:{namespace}:{sa}", "docs": docs, "run": run}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        kube_cluster.kubectl("delete", "validatingwebhookconfiguration", WEBHOOK, "--ignore-not-found")
        for ns in (namespace, test_ns):
            kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")
        for doc in docs:
            if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kube_cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found")


def _http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _condition(ws: dict[str, Any], kind: str) -> str | None:
    return next((c["status"] for c in (ws.get("status") or {}).get("conditions", []) if c["type"] == kind), None)


def _audited_calls(cluster: ControlPlane, user: str) -> list[dict[str, Any]]:
    calls = []
    for line in cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username") == user:
            calls.append(event)
    return calls


def _allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None) -> bool:
    for rule in rules:
        if (group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
                and verb in rule.get("verbs", [])
                and (not rule.get("resourceNames") or name in rule["resourceNames"])):
            return True
    return False


def test_operator_runs_with_the_charts_rbac_webhook_and_lease(chart_install: dict[str, Any]) -> None:
    cluster: ControlPlane = chart_install["cluster"]
    proc, log, ns = chart_install["proc"], chart_install["log"], chart_install["test_ns"]
    # It starts and becomes ready (caches synced, webhook serving).
    _wait(lambda: _http_ok(chart_install["http_port"], "/readyz"), 90, "/readyz", proc, log)
    # It takes the lease in its own namespace.
    lease = _wait(lambda: json.loads(cluster.kubectl(
        "get", "lease", "kaito-core-leader", "-n", chart_install["namespace"], "-o", "json", check=False).stdout
        or "null"), 60, "the leader Lease", proc, log)
    assert lease["spec"]["holderIdentity"].startswith(f"operator-{chart_install['run']}")
    # It serves the webhook the chart registered (caBundle patched in by the operator itself).
    bad = yaml.safe_load((ROOT / "examples" / "kaito_workspace_phi_3.yaml").read_text())
    bad["metadata"]["name"] = "too-small"
    bad["resource"]["instanceType"] = "Standard_NC4as_T4_v3"
    bad["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"

    def denied() -> str | None:
        rejected = cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(bad), check=False)
        return rejected.stderr if rejected.returncode != 0 and "denied the request" in rejected.stderr else None

    message = _wait(denied, 60, "the webhook to reject a too-small instance type", proc, log)
    assert "resource.instanceType: Standard_NC4as_T4_v3 has 16Gi GPU memory" in message
    # And it brings a seed Workspace to Ready, then tears it down.
    for example in ("kaito_workspace_phi_3.yaml", "kaito_workspace_tuning_phi_3.yaml"):
        cluster.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples" / example))

    def get(name: str) -> dict[str, Any]:
        return dict(json.loads(cluster.kubectl("get", "workspace", name, "-n", ns, "-o", "json").stdout))

    def done() -> bool:
        return (_condition(get("workspace-phi-3-mini"), "WorkspaceReady") == "True"
                and _condition(get("workspace-tuning-phi-3"), "WorkspaceSucceeded") == "True")

    _wait(done, 120, "the seed workspaces to become Ready / Succeeded", proc, log)
    cluster.kubectl("delete", "workspace", "--all", "-n", ns, "--timeout=120s")
    leftover = cluster.kubectl("get", "machines.kaito.sh", "-l", f"kaito.sh/workspacenamespace={ns}", "-o", "name")
    assert leftover.stdout.strip() == ""

    # Every call it made was allowed, and was one its rules grant.
    calls = _audited_calls(cluster, chart_install["sa"])
    assert calls, "no audited calls: is the audit log on?"
    forbidden = sorted({f"{c['verb']} {c['objectRef'].get('resource')}" for c in calls
                        if c.get("responseStatus", {}).get("code") == 403})
    assert forbidden == [], f"RBAC denied the operator: {forbidden}"
    docs = chart_install["docs"]
    rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    used: set[tuple[str, str, str]] = set()
    for call in calls:
        ref = call.get("objectRef") or {}
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        group, verb = ref.get("apiGroup", ""), call["verb"]
        if resource:
            assert _allowed(rules, group, resource, verb, ref.get("name")), f"{verb} {group}/{resource} not granted"
            used.add((group, resource, verb))
            if verb == "patch" and call.get("responseStatus", {}).get("code") == 201:
                used.add((group, resource, "create"))  # a server-side apply that created the object
    granted = {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    unused = granted - used
    # Least privilege: every grant this run did not exercise is listed here with the path that needs it.
    extra = unused - NOT_EXERCISED.keys()
    assert not extra, f"granted but never used (remove from the chart?): {sorted(extra)}; used: {sorted(used)}"


NOT_EXERCISED = {
    ("kaito.sh", "workspaces/finalizers", "update"): "blockOwnerDeletion under OwnerReferencesPermissionEnforcement",
    ("", "services", "delete"): "an obsolete Service (load balancer off, multi-node headless service gone)",
    ("", "configmaps", "delete"): "an obsolete default inference/tuning ConfigMap",
    ("apps", "deployments", "delete"): "switching a workspace from one node to several",
    ("apps", "statefulsets", "delete"): "switching a workspace from several nodes to one",
    ("apps", "statefulsets", "create"): "multi-node inference",
    ("apps", "statefulsets", "patch"): "multi-node inference",
    ("apps", "controllerrevisions", "patch"): "a revision seen again (rollback to an earlier spec)",
    ("apps", "controllerrevisions", "delete"): "pruning history beyond 10 revisions",
    ("batch", "jobs", "delete"): "tuning input/output changed: the Job is recreated",
    ("batch", "jobs", "get"): "a Job created by a previous leader that the cache has not seen yet",
    ("", "secrets", "update"): "rotating the webhook certificate before it expires",
    ("", "events", "patch"): "a repeated Event (aggregated into a count)",
    ("", "nodes", "patch"): "copying Machine labels/taints onto an existing Node, cordoning before delete",
    ("kaito.sh", "machines", "get"): "the garbage collector and a finalize after a stale cache",
}
