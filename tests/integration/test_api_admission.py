"""The API against a real apiserver: CRDs install, seed examples apply unchanged, columns show,
and every invalid Workspace is refused at admission with the validator's own message.

A webhook server runs in this test's event loop on 127.0.0.1 with a certificate from a
test CA; a ValidatingWebhookConfiguration (``clientConfig.url``, that CA as caBundle,
limited to this module's labelled namespace) sends it the Workspaces. A second namespace
is outside the webhook, to show what the CRD's CEL rules refuse on their own.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from cryptography.hazmat.primitives import serialization

from kaito_core.api import (
    WEBHOOK_NAME,
    Messages,
    WebhookServer,
    validate_workspace,
    validating_webhook_configuration,
)
from kaito_core.testing.certs import make_ca, sign_certificate

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
Doc = dict[str, Any]
DENIED = f'admission webhook "{WEBHOOK_NAME}" denied the request'


async def kubectl(cluster: Any, *args: str, input: str | None = None) -> tuple[int, str, str]:
    """kubectl in a thread, so the webhook in this event loop can answer the apiserver meanwhile."""
    proc = await asyncio.to_thread(cluster.kubectl, *args, input=input, check=False, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


async def apply(cluster: Any, namespace: str, doc: Doc) -> tuple[int, str, str]:
    return await kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


class Env:
    def __init__(self, cluster: Any, webhook_ns: str, plain_ns: str, label: str, run: str):
        self.cluster = cluster
        self.webhook_ns = webhook_ns  # the webhook covers it (label=run)
        self.plain_ns = plain_ns  # only the apiserver's own checks (schema, CEL)
        self.label = label
        self.run = run


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    cluster = kube_cluster
    rc, _, err = await kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "deploy/crds"))
    assert rc == 0, err
    rc, _, err = await kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s",
                               "crd/workspaces.kaito.sh", "crd/machines.kaito.sh")
    assert rc == 0, err

    run = uuid.uuid4().hex[:8]
    webhook_ns, plain_ns = f"api-webhook-{run}", f"api-cel-{run}"
    label = "kaito.sh/api-admission-test"
    for ns, labels in ((webhook_ns, {label: run}), (plain_ns, {})):
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
        rc, _, err = await kubectl(cluster, "apply", "-f", "-", input=json.dumps(manifest))
        assert rc == 0, err

    folder = tmp_path_factory.mktemp("webhook-tls")
    ca_cert, ca_key = make_ca("kaito-webhook-test-ca")
    cert, key = sign_certificate(ca_cert, ca_key, "kaito-webhook", ip_addresses=("127.0.0.1",), server=True)
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server = WebhookServer(folder / "tls.crt", folder / "tls.key", host="127.0.0.1", port=0)
    await server.start()
    name = f"kaito-api-test-{run}"
    config = validating_webhook_configuration(
        ca_cert.public_bytes(serialization.Encoding.PEM), url=server.url, name=name,
        namespace_selector={"matchLabels": {label: run}})
    rc, _, err = await kubectl(cluster, "apply", "-f", "-", input=json.dumps(config))
    assert rc == 0, err
    try:
        # the apiserver picks the configuration up asynchronously: wait until it calls us
        probe = _bad_memory()
        deadline = time.monotonic() + 30
        while True:
            rc, _, err = await kubectl(cluster, "apply", "--dry-run=server", "-n", webhook_ns, "-f", "-",
                                       input=yaml.safe_dump(probe))
            if DENIED in err:
                break
            assert time.monotonic() < deadline, f"the webhook never answered: {err}"
            await asyncio.sleep(0.5)
        yield Env(cluster, webhook_ns, plain_ns, label, run)
    finally:
        await kubectl(cluster, "delete", "validatingwebhookconfiguration", name, "--ignore-not-found")
        await server.stop()
        for ns in (webhook_ns, plain_ns):
            await kubectl(cluster, "delete", "namespace", ns, "--wait=false", "--ignore-not-found")


def example(stem: str) -> Doc:
    data: Doc = yaml.safe_load((ROOT / "examples" / f"kaito_workspace_{stem}.yaml").read_text())
    return data


def variant(stem: str, name: str, change: Callable[[Doc], Any]) -> Doc:
    doc = example(stem)
    doc["metadata"]["name"] = name
    change(doc)
    return doc


def _bad_memory() -> Doc:
    return variant("phi_3", "probe", lambda d: (d["resource"].update(instanceType="Standard_NC4as_T4_v3"),
                                               d["inference"]["preset"].update(name="phi-3-medium-4k-instruct")))


def _adapter(name: str) -> Doc:
    return {"source": {"name": name, "image": f"registry.example.com/{name}:1"}, "strength": "0.5"}


# Rules only the webhook enforces: (row id = Workspace name, document, message fragment)
WEBHOOK_RULES: list[tuple[str, Doc, str]] = [
    ("unknown-preset", variant("phi_3", "unknown-preset", lambda d: d["inference"]["preset"].update(
        name="phi-3-mini")),
     "inference.preset.name: unknown preset 'phi-3-mini'; did you mean phi-3-mini-128k-instruct"),
    ("unknown-instance-type", variant("phi_3", "unknown-instance-type", lambda d: d["resource"].update(
        instanceType="Standard_NC7s_v3")),
     "resource.instanceType: unknown GPU instance type 'Standard_NC7s_v3'; did you mean"),
    ("gpu-memory", variant("phi_3", "gpu-memory", lambda d: (
        d["resource"].update(instanceType="Standard_NC4as_T4_v3"),
        d["inference"]["preset"].update(name="phi-3-medium-4k-instruct"))),
     "resource.instanceType: Standard_NC4as_T4_v3 has 16Gi GPU memory; phi-3-medium-4k-instruct needs 28Gi; "
     "try Standard_NC24ads_A100_v4"),
    ("too-many-adapters", variant("phi_3_with_adapters", "too-many-adapters", lambda d: d["inference"].update(
        adapters=[_adapter(f"a{i}") for i in range(11)])),
     "inference.adapters: 11 adapters given; at most 10 are allowed"),
    ("duplicate-adapter", variant("phi_3_with_adapters", "duplicate-adapter",
                                  lambda d: d["inference"]["adapters"].append(_adapter("phi-3-adapter"))),
     "inference.adapters[1].source.name: duplicate adapter name 'phi-3-adapter'"),
    ("strength", variant("phi_3_with_adapters", "strength",
                         lambda d: d["inference"]["adapters"][0].update(strength="1.5")),
     "inference.adapters[0].strength: '1.5' is outside [0, 1]"),
    ("input-sources", variant("tuning_phi_3", "input-sources", lambda d: d["tuning"]["input"].update(
        image="registry.example.com/data:1")),
     "tuning.input: set exactly one of urls, image or volumeSource; got urls and image"),
    ("url-scheme", variant("tuning_phi_3", "url-scheme", lambda d: d["tuning"]["input"].update(
        urls=["file:///etc/passwd"])),
     "tuning.input.urls[0]: 'file:///etc/passwd' is not an http(s) URL"),
    ("url-loopback", variant("tuning_phi_3", "url-loopback", lambda d: d["tuning"]["input"].update(
        urls=["http://127.0.0.1:9000/train.parquet"])),
     "tuning.input.urls[0]: 'http://127.0.0.1:9000/train.parquet' points at a loopback address"),
    ("url-private", variant("tuning_phi_3", "url-private", lambda d: d["tuning"]["input"].update(
        urls=["https://10.0.0.7/train.parquet"])),
     "points at a private address (10.0.0.7)"),
    ("url-link-local", variant("tuning_phi_3", "url-link-local", lambda d: d["tuning"]["input"].update(
        urls=["http://169.254.10.1/x"])),
     "points at a link-local address (169.254.10.1)"),
    ("url-metadata", variant("tuning_phi_3", "url-metadata", lambda d: d["tuning"]["input"].update(
        urls=["http://169.254.169.254/latest/meta-data/"])),
     "points at a cloud metadata address (169.254.169.254)"),
    ("url-metadata-name", variant("tuning_phi_3", "url-metadata-name", lambda d: d["tuning"]["input"].update(
        urls=["http://metadata.google.internal/computeMetadata/v1/"])),
     "points at 'metadata.google.internal'"),
    ("push-secret", variant("tuning_phi_3", "push-secret", lambda d: d["tuning"]["output"].pop("imagePushSecret")),
     "tuning.output.imagePushSecret: required with tuning.output.image"),
    ("no-tuning-support", variant("tuning_phi_3", "no-tuning-support", lambda d: (
        d["resource"].update(instanceType="Standard_NC96ads_A100_v4"),
        d["tuning"]["preset"].update(name="falcon-40b"))),
     "tuning.preset.name: falcon-40b does not support tuning (qlora)"),
    ("gated", variant("phi_3", "gated", lambda d: (
        d["resource"].update(instanceType="Standard_NC24ads_A100_v4"),
        d["inference"]["preset"].update(name="llama-3.1-8b-instruct"))),
     "inference.preset.presetOptions.modelAccessSecret: llama-3.1-8b-instruct is gated on Hugging Face"),
]

# Rules the CRD's CEL enforces (with the validator's words): (row id, document, message)
CEL_RULES: list[tuple[str, Doc, str]] = [
    ("inference-and-tuning", variant("phi_3", "inference-and-tuning",
                                     lambda d: d.update(tuning=example("tuning_phi_3")["tuning"])),
     Messages.INFERENCE_AND_TUNING),
    ("neither", variant("phi_3", "neither", lambda d: d.pop("inference")), Messages.NEITHER_INFERENCE_NOR_TUNING),
    ("preset-and-template", variant("phi_3", "preset-and-template", lambda d: d["inference"].update(
        template={"spec": {"containers": [{"name": "c", "image": "i"}]}})), Messages.PRESET_AND_TEMPLATE),
]

# Immutable fields: (row id, original, changed, field path)
IMMUTABLE: list[tuple[str, Doc, Callable[[Doc], Any], str]] = [
    ("imm-instance-type", variant("phi_3", "imm-instance-type", lambda d: None),
     lambda d: d["resource"].update(instanceType="Standard_NC12s_v3"), "resource.instanceType"),
    ("imm-label-selector", variant("phi_3", "imm-label-selector", lambda d: None),
     lambda d: d["resource"].update(labelSelector={"matchLabels": {"apps": "changed"}}), "resource.labelSelector"),
    ("imm-preset-name", variant("phi_3", "imm-preset-name", lambda d: None),
     lambda d: d["inference"]["preset"].update(name="phi-3.5-mini-instruct"), "inference.preset.name"),
    ("imm-tuning-method", variant("tuning_phi_3", "imm-tuning-method",
                                  lambda d: d["resource"].update(instanceType="Standard_NC24ads_A100_v4")),
     lambda d: d["tuning"].update(method="lora"), "tuning.method"),
]


async def test_seed_examples_apply_unchanged_and_read_back_in_both_versions(env: Env) -> None:
    for path in EXAMPLES:
        rc, out, err = await kubectl(env.cluster, "apply", "-n", env.webhook_ns, "-f", str(path))
        assert rc == 0, f"{path.name}: {err}"
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        for version in ("v1beta1", "v1alpha1"):
            rc, out, err = await kubectl(env.cluster, "get", f"workspaces.{version}.kaito.sh/{name}",
                                         "-n", env.webhook_ns, "-o", "json")
            assert rc == 0, err
            got = json.loads(out)
            assert got["apiVersion"] == f"kaito.sh/{version}"
            original = yaml.safe_load(path.read_text())
            for field in ("resource", "inference", "tuning"):
                if field in original:
                    expected = copy.deepcopy(original[field])
                    if field == "resource":
                        expected.setdefault("count", 1)  # CRD default
                    assert _subset(expected, got[field]), (field, got[field])
    adapter = json.loads((await kubectl(env.cluster, "get", "workspace/workspace-phi-3-mini-adapter", "-n",
                                        env.webhook_ns, "-o", "json"))[1])
    assert adapter["inference"]["adapters"][0]["strength"] == "1.0"


def _subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _subset(v, big[k]) for k, v in small.items())
    return bool(small == big)


async def test_kubectl_get_shows_the_columns(env: Env) -> None:
    doc = variant("phi_3", "columns", lambda d: None)
    rc, _, err = await apply(env.cluster, env.webhook_ns, doc)
    assert rc == 0, err
    status = {"status": {"conditions": [
        {"type": t, "status": "True", "reason": "Ready", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        for t in ("ResourceReady", "InferenceReady", "WorkspaceSucceeded", "WorkspaceReady")]}}
    rc, _, err = await kubectl(env.cluster, "patch", "workspace", "columns", "-n", env.webhook_ns, "--type=merge",
                               "--subresource=status", "-p", json.dumps(status))
    assert rc == 0, err
    rc, out, err = await kubectl(env.cluster, "get", "workspace", "columns", "-n", env.webhook_ns)
    assert rc == 0, err
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
    assert row.split()[:5] == ["columns", "Standard_NC6s_v3", "True", "True", "True"]
    rc, out, _ = await kubectl(env.cluster, "get", "wk", "columns", "-n", env.webhook_ns, "-o", "wide")
    assert out.splitlines()[0].split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "JOBSTARTED",
                                           "WORKSPACESUCCEEDED", "WORKSPACEREADY", "AGE"]
    rc, out, _ = await kubectl(env.cluster, "get", "wks", "-n", env.webhook_ns, "-o", "name")
    assert "workspace.kaito.sh/columns" in out.split()


@pytest.mark.parametrize(("name", "doc", "message"), WEBHOOK_RULES, ids=[r[0] for r in WEBHOOK_RULES])
async def test_webhook_refuses_with_the_validator_message(env: Env, name: str, doc: Doc, message: str) -> None:
    direct = validate_workspace(doc)  # what the reconciler gets
    assert direct, f"{name} is valid"
    summary = "; ".join(str(error) for error in direct)
    assert message in summary
    rc, _, err = await apply(env.cluster, env.webhook_ns, doc)
    assert rc != 0, f"{name} was accepted"
    assert DENIED in err and summary in err, err
    # outside the webhook's namespaces, the apiserver alone lets it in: the webhook is what refused it
    rc, _, err = await apply(env.cluster, env.plain_ns, doc)
    assert rc == 0, err


@pytest.mark.parametrize(("name", "doc", "message"), CEL_RULES, ids=[r[0] for r in CEL_RULES])
async def test_cel_refuses_on_its_own_with_the_same_words(env: Env, name: str, doc: Doc, message: str) -> None:
    direct = validate_workspace(doc)
    assert any(error.message == message for error in direct), direct
    for namespace in (env.plain_ns, env.webhook_ns):
        rc, _, err = await apply(env.cluster, namespace, doc)
        assert rc != 0, f"{name} was accepted in {namespace}"
        assert message in err, err


@pytest.mark.parametrize(("name", "original", "change", "path"), IMMUTABLE, ids=[r[0] for r in IMMUTABLE])
async def test_immutable_fields_are_refused_on_update(
        env: Env, name: str, original: Doc, change: Callable[[Doc], Any], path: str) -> None:
    changed = copy.deepcopy(original)
    change(changed)
    direct = validate_workspace(changed, original)
    assert [(e.path, e.message) for e in direct] == [(path, Messages.IMMUTABLE)]
    for namespace in (env.plain_ns, env.webhook_ns):  # CEL: with or without the webhook
        rc, _, err = await apply(env.cluster, namespace, original)
        assert rc == 0, err
        rc, _, err = await apply(env.cluster, namespace, changed)
        assert rc != 0, f"{name}: changing {path} was accepted in {namespace}"
        assert path in err and Messages.IMMUTABLE in err, err


async def test_switching_inference_to_tuning_is_refused(env: Env) -> None:
    original = variant("phi_3", "switch", lambda d: None)
    rc, _, err = await apply(env.cluster, env.plain_ns, original)
    assert rc == 0, err
    switched = copy.deepcopy(original)
    switched.pop("inference")
    switched["tuning"] = example("tuning_phi_3")["tuning"]
    rc, _, err = await kubectl(env.cluster, "replace", "-n", env.plain_ns, "-f", "-", input=yaml.safe_dump(switched))
    assert rc != 0 and Messages.SWITCH_INFERENCE_TUNING in err, err
    assert any(e.message == Messages.SWITCH_INFERENCE_TUNING for e in validate_workspace(switched, original))


async def test_metadata_changes_pass_even_when_the_catalog_would_now_refuse(env: Env) -> None:
    """A Workspace stored before the webhook (or before a catalog change) can still get finalizers."""
    namespace = f"api-legacy-{uuid.uuid4().hex[:8]}"
    rc, _, err = await kubectl(env.cluster, "create", "namespace", namespace)
    assert rc == 0, err
    try:
        doc = _bad_memory()
        doc["metadata"]["name"] = "legacy"
        rc, _, err = await apply(env.cluster, namespace, doc)  # no webhook here yet: it gets in
        assert rc == 0, err
        rc, _, err = await kubectl(env.cluster, "label", "namespace", namespace, f"{env.label}={env.run}")
        assert rc == 0, err
        changed = copy.deepcopy(doc)
        changed["inference"]["preset"]["accessMode"] = "private"
        deadline = time.monotonic() + 30
        while True:  # the webhook now covers the namespace: a spec change is refused
            rc, _, err = await apply(env.cluster, namespace, changed)
            if rc != 0:
                break
            assert time.monotonic() < deadline, "the webhook never covered the relabelled namespace"
            await asyncio.sleep(0.5)
        assert DENIED in err and "needs 28Gi" in err, err
        for patch in ({"metadata": {"finalizers": ["workspace.finalizer.kaito.sh"]}},
                      {"metadata": {"labels": {"team": "a"}, "finalizers": None}}):
            rc, _, err = await kubectl(env.cluster, "patch", "workspace", "legacy", "-n", namespace,
                                       "--type=merge", "-p", json.dumps(patch))
            assert rc == 0, err
        rc, _, err = await kubectl(env.cluster, "delete", "workspace", "legacy", "-n", namespace)
        assert rc == 0, err
    finally:
        await kubectl(env.cluster, "delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


async def test_machine_crd(env: Env) -> None:
    machine: Doc = {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Machine",
        "metadata": {"name": f"m-{env.plain_ns}", "labels": {"kaito.sh/workspace": "w",
                                                            "kaito.sh/workspacenamespace": env.plain_ns}},
        "spec": {"instanceType": "Standard_NC6s_v3", "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
                 "resources": {"requests": {"nvidia.com/gpu": 1, "storage": "70Gi"}}},
    }
    name = machine["metadata"]["name"]
    rc, _, err = await kubectl(env.cluster, "apply", "-f", "-", input=json.dumps(machine))
    assert rc == 0, err
    try:
        rc, out, err = await kubectl(env.cluster, "get", "machines", name)
        assert out.splitlines()[0].split() == ["NAME", "INSTANCE", "NODE", "READY", "AGE"], out
        changed = copy.deepcopy(machine)
        changed["spec"]["instanceType"] = "Standard_NC12s_v3"
        rc, _, err = await kubectl(env.cluster, "apply", "-f", "-", input=json.dumps(changed))
        assert rc != 0 and "spec is immutable" in err, err
        status = {"status": {"providerID": "azure:///x", "nodeName": "n1", "conditions": [
            {"type": "Ready", "status": "True", "reason": "Ready", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
        rc, _, err = await kubectl(env.cluster, "patch", "machine", name, "--type=merge", "--subresource=status",
                                   "-p", json.dumps(status))
        assert rc == 0, err
        rc, out, _ = await kubectl(env.cluster, "get", "machine", name, "-o", "wide")
        assert out.splitlines()[0].split() == ["NAME", "INSTANCE", "NODE", "READY", "WORKSPACE", "PROVISIONER",
                                               "ID", "AGE"], out
        # PROVISIONER is empty, so the row has one word less than the header
        assert out.splitlines()[1].split()[:6] == [name, "Standard_NC6s_v3", "n1", "True", "w", "azure:///x"], out
    finally:
        await kubectl(env.cluster, "delete", "machine", name, "--ignore-not-found")


# The CRD's own bounds (issue 17): refused by the apiserver with or without the webhook.
SCHEMA_BOUNDS: list[tuple[str, Doc, str]] = [
    ("count-100000", variant("phi_3", "count-100000", lambda d: d["resource"].update(count=100_000)),
     "resource.count"),
    ("count-2-70", variant("phi_3", "count-2-70", lambda d: d["resource"].update(count=2**70)), "resource.count"),
    ("long-preset-name", variant("phi_3", "long-preset-name", lambda d: d["inference"]["preset"].update(
        name="x" * 300)), "inference.preset.name"),
    ("long-label-value", variant("phi_3", "long-label-value", lambda d: d["resource"].update(
        labelSelector={"matchLabels": {"apps": "y" * 64}})), "resource.labelSelector.matchLabels"),
]


@pytest.mark.parametrize(("name", "doc", "field"), SCHEMA_BOUNDS, ids=[r[0] for r in SCHEMA_BOUNDS])
async def test_the_crd_bounds_counts_and_strings_on_its_own(env: Env, name: str, doc: Doc, field: str) -> None:
    assert validate_workspace(doc), f"the validator takes {name}"
    for namespace in (env.plain_ns, env.webhook_ns):
        rc, _, err = await apply(env.cluster, namespace, doc)
        assert rc != 0, f"{name} was accepted in {namespace}"
        assert field in err, err


async def test_a_privileged_template_is_refused_at_admission_naming_every_field(env: Env) -> None:
    doc = variant("phi_3", "root-on-the-node", lambda d: d.update(inference={"template": {
        "metadata": {"labels": {"app": "root"}},
        "spec": {"serviceAccountName": "namespace-admin", "hostNetwork": True, "hostPID": True,
                 "containers": [{"name": "c", "image": "registry.example.com/c:1",
                                 "securityContext": {"privileged": True},
                                 "volumeMounts": [{"name": "root", "mountPath": "/host"}]}],
                 "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}}))
    rc, _, err = await apply(env.cluster, env.webhook_ns, doc)
    assert rc != 0 and DENIED in err, err
    for field in ("inference.template.spec.serviceAccountName", "inference.template.spec.hostNetwork",
                  "inference.template.spec.hostPID", "inference.template.spec.containers[0].securityContext.privileged",
                  "inference.template.spec.volumes[0].hostPath"):
        assert field in err, (field, err)
    tuning = variant("tuning_phi_3", "host-etc", lambda d: (
        d["resource"].update(instanceType="Standard_NC24ads_A100_v4"),
        d["tuning"].update(input={"volumeSource": {"hostPath": {"path": "/etc/kubernetes"}}})))
    rc, _, err = await apply(env.cluster, env.webhook_ns, tuning)
    assert rc != 0 and "tuning.input.volumeSource.hostPath: hostPath volumes are not allowed" in err, err
