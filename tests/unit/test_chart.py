"""The Helm chart lints, renders for every provisioner, and ships the generated CRDs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_core.testing import KUBERNETES_VERSION, ensure_binaries

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "charts" / "kaito-core"


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_binaries(("helm",)) / "helm"


def render(helm: Path, *sets: str) -> list[dict[str, Any]]:
    args = [str(helm), "template", "kaito-core", str(CHART), "--namespace", "kaito-system", "--include-crds",
            "--kube-version", KUBERNETES_VERSION]
    for item in sets:
        args += ["--set", item]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def test_helm_lint(helm: Path) -> None:
    proc = subprocess.run([str(helm), "lint", str(CHART), "--strict"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("provisioner", ["aks", "karpenter", "simulated", "byo"])
def test_renders_for_each_provisioner(helm: Path, provisioner: str) -> None:
    docs = render(helm, f"provisioner={provisioner}", "aks.clientID=00000000-0000-0000-0000-000000000000")
    deployment = by_kind(docs, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert f"--provisioner={provisioner}" in container["args"]
    assert deployment["spec"]["replicas"] == 2 and "--leader-elect=true" in container["args"]
    # Hardened: non-root, read-only root fs, RuntimeDefault seccomp, no capabilities.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"livenessProbe", "readinessProbe", "resources"} <= set(container)
    rules = by_kind(docs, "ClusterRole")[0]["rules"]
    groups = {group for rule in rules for group in rule["apiGroups"]}
    assert ("karpenter.sh" in groups) == (provisioner == "karpenter")
    node_verbs = next(rule["verbs"] for rule in rules if rule["resources"] == ["nodes"])
    assert ("create" in node_verbs) == (provisioner == "simulated")
    env = {item["name"] for item in container.get("env", [])}
    assert ("ARM_SUBSCRIPTION_ID" in env) == (provisioner == "aks")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert (labels.get("azure.workload.identity/use") == "true") == (provisioner == "aks")
    assert by_kind(docs, "PodDisruptionBudget") and by_kind(docs, "ValidatingWebhookConfiguration")


def test_webhook_matches_controller_flags(helm: Path) -> None:
    docs = render(helm)
    hook = by_kind(docs, "ValidatingWebhookConfiguration")[0]
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--webhook-configuration={hook['metadata']['name']}" in args
    service = hook["webhooks"][0]["clientConfig"]["service"]
    assert f"--webhook-service={service['name']}" in args
    assert any(s["metadata"]["name"] == service["name"] for s in by_kind(docs, "Service"))
    assert hook["webhooks"][0]["rules"][0]["resources"] == ["workspaces"]


def test_optional_service_monitor_and_cert_manager(helm: Path) -> None:
    plain = render(helm)
    assert not by_kind(plain, "ServiceMonitor") and not by_kind(plain, "Certificate")
    full = render(helm, "serviceMonitor.enabled=true", "webhook.certManager.enabled=true")
    assert by_kind(full, "ServiceMonitor") and by_kind(full, "Certificate")
    hook = by_kind(full, "ValidatingWebhookConfiguration")[0]
    assert "cert-manager.io/inject-ca-from" in hook["metadata"]["annotations"]


def test_chart_crds_are_the_generated_ones() -> None:
    generated = sorted((ROOT / "deploy" / "crds").glob("*.yaml"))
    assert generated, "deploy/crds is empty"
    for path in generated:
        shipped = CHART / "crds" / path.name
        assert shipped.exists() and shipped.read_text() == path.read_text(), (
            f"{shipped} differs from {path}: copy deploy/crds/*.yaml into the chart's crds/ folder")


def test_one_value_points_the_operator_and_its_workspaces_at_a_registry(helm: Path) -> None:
    docs = render(helm, "imageRegistry=myacr.azurecr.io/kaito", "weights.cache.enabled=true",
                  "weights.cache.storageClass=fast")
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container["image"] == f"myacr.azurecr.io/kaito/kaito-core-controller:{chart['appVersion']}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KAITO_WORKSPACE__IMAGE_REGISTRY"] == "myacr.azurecr.io/kaito"
    assert env["KAITO_WORKSPACE__IMAGE_TAG"] == chart["appVersion"]
    assert env["KAITO_WORKSPACE__WEIGHTS_REGISTRY"] == "mcr.microsoft.com/aks/kaito"
    # The operator reads these as its WorkspaceSettings.
    from kaito_core.controllers.workspace.settings import WeightsCacheSettings, WorkspaceSettings

    cache = WeightsCacheSettings.model_validate_json(env["KAITO_WORKSPACE__WEIGHTS_CACHE"])
    assert cache.storage_class == "fast" and cache.access_mode == "ReadWriteMany" and cache.size is None
    assert WorkspaceSettings(image_registry=env["KAITO_WORKSPACE__IMAGE_REGISTRY"]).image_registry
    rules = by_kind(docs, "ClusterRole")[0]["rules"]
    assert any(rule["resources"] == ["persistentvolumeclaims"] for rule in rules)
    plain = by_kind(render(helm), "ClusterRole")[0]["rules"]
    assert not any(rule["resources"] == ["persistentvolumeclaims"] for rule in plain)


@pytest.mark.parametrize("per_workspace", [False, True])
def test_the_karpenter_settings_the_chart_sets_are_the_plugins(helm: Path, per_workspace: bool) -> None:
    from kaito_provisioner_karpenter import KarpenterSettings

    docs = render(helm, "provisioner=karpenter", f"karpenter.nodePoolPerWorkspace={str(per_workspace).lower()}")
    (deployment,) = by_kind(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    ours = {k: v for k, v in env.items() if "KARPENTER" in k}
    prefix = KarpenterSettings.model_config["env_prefix"]
    fields = {f"{prefix}{name}".upper() for name in KarpenterSettings.model_fields}
    assert ours and set(ours) <= fields, f"env the plugin never reads: {sorted(set(ours) - fields)}"
    settings = KarpenterSettings.model_validate({k[len(prefix):].lower(): v for k, v in ours.items()})
    assert settings.node_class_kind == "AKSNodeClass" and settings.node_pool_per_workspace is per_workspace
    rules = [r for d in by_kind(docs, "ClusterRole") for r in d["rules"]]
    assert any("nodepools" in r["resources"] for r in rules) is per_workspace
