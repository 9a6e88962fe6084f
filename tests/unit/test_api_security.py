"""A Workspace is never a way to more privilege than creating a pod in its namespace gives (issue 17).

The one validator (admission and reconcile) refuses, in ``inference.template`` and in the tuning
volume sources: privileged containers, privilege escalation, host namespaces, hostPath and every
volume kind off the allow-list, added capabilities, host ports, and a ServiceAccount other than the
namespace's ``default``. Also: a bounded ``resource.count``, label selectors checked as the apiserver
checks them, names that end in a newline, and bounds on the CRD's free strings and numbers.

The expected outcomes are written down here, not computed by the validator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_core.api import MAX_NODE_COUNT, Rule, validate_workspace
from kaito_core.api.crd import workspace_crd
from kaito_core.api.webhook import admission_review
from kaito_core.api.weights import ANNOTATION_MODEL_WEIGHTS

EXAMPLES = Path(__file__).parents[2] / "examples"
Doc = dict[str, Any]


def example(name: str) -> Doc:
    data: Doc = yaml.safe_load((EXAMPLES / f"kaito_workspace_{name}.yaml").read_text())
    return data


def template_ws(spec: Doc) -> Doc:
    doc = example("phi_3")
    doc["inference"] = {"template": {"metadata": {"labels": {"app": "mine"}}, "spec": spec}}
    return doc


def container(**extra: Any) -> Doc:
    return {"name": "server", "image": "r.example.com/server:1", **extra}


def tuning_ws(change: Callable[[Doc], Any]) -> Doc:
    doc = example("tuning_phi_3")
    doc["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    change(doc["tuning"])
    return doc


def input_volume(source: Doc) -> Doc:
    return tuning_ws(lambda t: t.update(input={"volumeSource": source}))


def output_volume(source: Doc) -> Doc:
    return tuning_ws(lambda t: t.update(output={"volumeSource": source}))


def adapter_named(name: str) -> Doc:
    doc = example("phi_3_with_adapters")
    doc["inference"]["adapters"][0]["source"]["name"] = name
    return doc


ATTACK = {
    "serviceAccountName": "namespace-admin", "hostNetwork": True, "hostPID": True, "hostIPC": True,
    "containers": [container(securityContext={"privileged": True, "allowPrivilegeEscalation": True,
                                              "capabilities": {"add": ["SYS_ADMIN"]}},
                             ports=[{"containerPort": 80, "hostPort": 80}],
                             volumeMounts=[{"name": "root", "mountPath": "/host"}])],
    "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
}

# (id, document, rule, field path, fragment of the message)
REFUSED: list[tuple[str, Doc, str, str, str]] = [
    ("privileged", template_ws({"containers": [container(securityContext={"privileged": True})]}),
     Rule.POD_SECURITY, "inference.template.spec.containers[0].securityContext.privileged",
     "privileged containers are not allowed (a Workspace may run only what any pod in its namespace may "
     "run); remove privileged"),
    ("privileged-init", template_ws({"containers": [container()],
                                     "initContainers": [container(securityContext={"privileged": True})]}),
     Rule.POD_SECURITY, "inference.template.spec.initContainers[0].securityContext.privileged",
     "privileged containers are not allowed"),
    ("privileged-ephemeral", template_ws({"containers": [container()], "ephemeralContainers": [
        container(securityContext={"privileged": True})]}),
     Rule.POD_SECURITY, "inference.template.spec.ephemeralContainers[0].securityContext.privileged",
     "privileged containers are not allowed"),
    ("escalation", template_ws({"containers": [container(securityContext={"allowPrivilegeEscalation": True})]}),
     Rule.POD_SECURITY, "inference.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
     "set it to false or remove it"),
    ("host-network", template_ws({"hostNetwork": True, "containers": [container()]}),
     Rule.POD_SECURITY, "inference.template.spec.hostNetwork", "the node's network namespace"),
    ("host-pid", template_ws({"hostPID": True, "containers": [container()]}),
     Rule.POD_SECURITY, "inference.template.spec.hostPID", "remove hostPID"),
    ("host-ipc", template_ws({"hostIPC": True, "containers": [container()]}),
     Rule.POD_SECURITY, "inference.template.spec.hostIPC", "remove hostIPC"),
    ("capabilities", template_ws({"containers": [container(securityContext={"capabilities": {
        "add": ["NET_ADMIN", "SYS_ADMIN"]}})]}),
     Rule.POD_SECURITY, "inference.template.spec.containers[0].securityContext.capabilities.add",
     "adds NET_ADMIN, SYS_ADMIN"),
    ("host-port", template_ws({"containers": [container(ports=[{"containerPort": 5000},
                                                                {"containerPort": 80, "hostPort": 8080}])]}),
     Rule.POD_SECURITY, "inference.template.spec.containers[0].ports[1].hostPort", "remove hostPort"),
    ("host-process", template_ws({"securityContext": {"windowsOptions": {"hostProcess": True}},
                                  "containers": [container()]}),
     Rule.POD_SECURITY, "inference.template.spec.securityContext.windowsOptions.hostProcess", "remove it"),
    ("unconfined-seccomp", template_ws({"containers": [container(securityContext={
        "seccompProfile": {"type": "Unconfined"}})]}),
     Rule.POD_SECURITY, "inference.template.spec.containers[0].securityContext.seccompProfile.type",
     "use RuntimeDefault"),
    ("unmasked-proc", template_ws({"containers": [container(securityContext={"procMount": "Unmasked"})]}),
     Rule.POD_SECURITY, "inference.template.spec.containers[0].securityContext.procMount", "remove it"),
    ("host-path", template_ws({"containers": [container()], "volumes": [
        {"name": "root", "hostPath": {"path": "/"}}]}),
     Rule.FORBIDDEN_VOLUME, "inference.template.spec.volumes[0].hostPath",
     "hostPath volumes are not allowed; use one of persistentVolumeClaim, configMap, secret, emptyDir"),
    ("nfs", template_ws({"containers": [container()], "volumes": [
        {"name": "ok", "emptyDir": {}}, {"name": "share", "nfs": {"server": "10.0.0.1", "path": "/"}}]}),
     Rule.FORBIDDEN_VOLUME, "inference.template.spec.volumes[1].nfs", "nfs volumes are not allowed"),
    ("service-account", template_ws({"serviceAccountName": "namespace-admin", "containers": [container()]}),
     Rule.SERVICE_ACCOUNT, "inference.template.spec.serviceAccountName",
     "'namespace-admin': a Workspace's pods run as the namespace's default ServiceAccount; remove "
     "serviceAccountName"),
    ("service-account-deprecated", template_ws({"serviceAccount": "admin", "containers": [container()]}),
     Rule.SERVICE_ACCOUNT, "inference.template.spec.serviceAccount", "remove serviceAccount"),
    ("tuning-input-host-path", input_volume({"hostPath": {"path": "/etc/kubernetes"}}),
     Rule.FORBIDDEN_VOLUME, "tuning.input.volumeSource.hostPath", "hostPath volumes are not allowed"),
    ("tuning-output-host-path", output_volume({"hostPath": {"path": "/var/lib/kubelet"}}),
     Rule.FORBIDDEN_VOLUME, "tuning.output.volumeSource.hostPath", "hostPath volumes are not allowed"),
    ("tuning-output-unknown-kind", output_volume({"iscsi": {"targetPortal": "10.0.0.1:3260"}}),
     Rule.FORBIDDEN_VOLUME, "tuning.output.volumeSource.iscsi", "iscsi volumes are not allowed"),
    ("tuning-two-kinds", input_volume({"emptyDir": {}, "persistentVolumeClaim": {"claimName": "d"}}),
     Rule.FORBIDDEN_VOLUME, "tuning.input.volumeSource", "give exactly one volume kind; got emptyDir and "
     "persistentVolumeClaim"),
    ("tuning-name-override", input_volume({"name": "x", "persistentVolumeClaim": {"claimName": "d"}}),
     Rule.FORBIDDEN_VOLUME, "tuning.input.volumeSource.name", "'name' is not a volume kind"),
    ("too-many-nodes", {**example("phi_3"), "resource": {**example("phi_3")["resource"], "count": 100_000}},
     Rule.TOO_MANY_NODES, "resource.count", f"100000 nodes asked for; at most {MAX_NODE_COUNT} are allowed"),
    ("two-to-the-seventy", {**example("phi_3"), "resource": {**example("phi_3")["resource"], "count": 2**70}},
     Rule.TOO_MANY_NODES, "resource.count", f"at most {MAX_NODE_COUNT} are allowed"),
    ("label-key", {**example("phi_3"), "resource": {"instanceType": "Standard_NC6s_v3",
                                                   "labelSelector": {"matchLabels": {"bad key": "x"}}}},
     Rule.INVALID_LABEL_SELECTOR, "resource.labelSelector.matchLabels", "'bad key' is not a valid label key"),
    ("label-key-prefix", {**example("phi_3"), "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {
        "matchLabels": {"Example.COM/app": "x"}}}},
     Rule.INVALID_LABEL_SELECTOR, "resource.labelSelector.matchLabels", "'Example.COM/app' is not a valid label key"),
    ("label-value", {**example("phi_3"), "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {
        "matchLabels": {"app": "-x"}}}},
     Rule.INVALID_LABEL_SELECTOR, "resource.labelSelector.matchLabels[app]", "'-x' is not a valid label value"),
    ("label-value-long", {**example("phi_3"), "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {
        "matchLabels": {"app": "a" * 64}}}},
     Rule.INVALID_LABEL_SELECTOR, "resource.labelSelector.matchLabels[app]", "at most 63 characters"),
    ("label-value-newline", {**example("phi_3"), "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {
        "matchLabels": {"app": "phi\n"}}}},
     Rule.INVALID_LABEL_SELECTOR, "resource.labelSelector.matchLabels[app]", "is not a valid label value"),
    ("expression-key", {**example("phi_3"), "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {
        "matchExpressions": [{"key": "a/b/c", "operator": "Exists"}]}}},
     Rule.INVALID_LABEL_SELECTOR, "resource.labelSelector.matchExpressions[0].key", "not a valid label key"),
    ("expression-in-without-values", {**example("phi_3"), "resource": {"instanceType": "Standard_NC6s_v3",
                                                                      "labelSelector": {"matchExpressions": [
                                                                          {"key": "app", "operator": "In"}]}}},
     Rule.INVALID_LABEL_SELECTOR, "resource.labelSelector.matchExpressions[0].values",
     "required with operator In"),
    ("expression-exists-with-values", {**example("phi_3"), "resource": {"instanceType": "Standard_NC6s_v3",
                                                                       "labelSelector": {"matchExpressions": [
        {"key": "app", "operator": "Exists", "values": ["x"]}]}}},
     Rule.INVALID_LABEL_SELECTOR, "resource.labelSelector.matchExpressions[0].values",
     "must be empty with operator Exists"),
    ("expression-value", {**example("phi_3"), "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["ok", "not ok"]}]}}},
     Rule.INVALID_LABEL_SELECTOR, "resource.labelSelector.matchExpressions[0].values[1]",
     "'not ok' is not a valid label value"),
    ("name-newline", {**example("phi_3"), "metadata": {"name": "workspace-phi-3\n"}},
     Rule.INVALID_NAME, "metadata.name", "is not a valid Workspace name"),
    ("weights-repo-newline", {**example("phi_3"), "metadata": {"name": "w", "annotations": {
        ANNOTATION_MODEL_WEIGHTS: "hf://microsoft/Phi-3-mini-4k-instruct\n@abc123"}}},
     Rule.INVALID_WEIGHTS_SOURCE, f"metadata.annotations[{ANNOTATION_MODEL_WEIGHTS}]",
     "is not a Hugging Face repository id"),
    ("weights-claim-newline", {**example("phi_3"), "metadata": {"name": "w", "annotations": {
        ANNOTATION_MODEL_WEIGHTS: "pvc://weights\n/phi"}}},
     Rule.INVALID_WEIGHTS_SOURCE, f"metadata.annotations[{ANNOTATION_MODEL_WEIGHTS}]",
     "is not a PersistentVolumeClaim name"),
    ("adapter-name-newline", adapter_named("phi-3-adapter\n"),
     Rule.ADAPTER_SOURCE, "inference.adapters[0].source.name", "is not a valid adapter name"),
]


@pytest.mark.parametrize(("doc", "rule", "path", "fragment"), [row[1:] for row in REFUSED],
                         ids=[row[0] for row in REFUSED])
def test_refused_with_the_field_and_the_fix(doc: Doc, rule: str, path: str, fragment: str) -> None:
    errors = validate_workspace(doc)
    matching = [e for e in errors if e.rule == rule and e.path == path]
    assert matching, f"no {rule} error at {path} in {errors}"
    assert fragment in matching[0].message, matching[0].message


def test_the_attack_of_the_review_is_refused_in_every_part_and_by_admission() -> None:
    doc = template_ws(ATTACK)
    paths = {e.path for e in validate_workspace(doc)}
    assert paths >= {
        "inference.template.spec.serviceAccountName", "inference.template.spec.hostNetwork",
        "inference.template.spec.hostPID", "inference.template.spec.hostIPC",
        "inference.template.spec.containers[0].securityContext.privileged",
        "inference.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
        "inference.template.spec.containers[0].securityContext.capabilities.add",
        "inference.template.spec.containers[0].ports[0].hostPort",
        "inference.template.spec.volumes[0].hostPath",
    }, paths
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "u1", "operation": "CREATE", "object": doc,
                          "kind": {"group": "kaito.sh", "version": "v1alpha1", "kind": "Workspace"}}}
    response = admission_review(review)["response"]
    assert response["allowed"] is False
    assert "inference.template.spec.volumes[0].hostPath" in response["status"]["message"]


ALLOWED: list[tuple[str, Doc]] = [
    ("plain-template", template_ws({"containers": [container()]})),
    ("safe-template", template_ws({
        "serviceAccountName": "default", "automountServiceAccountToken": False, "hostNetwork": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container(
            securityContext={"privileged": False, "allowPrivilegeEscalation": False,
                             "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                             "seccompProfile": {"type": "RuntimeDefault"}, "procMount": "Default"},
            ports=[{"containerPort": 5000, "hostPort": 0}])],
        "volumes": [
            {"name": "a", "persistentVolumeClaim": {"claimName": "c"}},
            {"name": "b", "configMap": {"name": "cm"}},
            {"name": "c", "secret": {"secretName": "s"}},
            {"name": "d", "emptyDir": {"medium": "Memory"}},
            {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}},
            {"name": "f", "csi": {"driver": "secrets-store.csi.k8s.io"}},
            {"name": "g", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}},
                                                    {"configMap": {"name": "cm"}}]}},
            {"name": "h", "downwardAPI": {"items": []}},
        ]})),
    ("tuning-pvc-in-and-out", tuning_ws(lambda t: t.update(
        input={"volumeSource": {"persistentVolumeClaim": {"claimName": "data"}}},
        output={"volumeSource": {"persistentVolumeClaim": {"claimName": "results"}}}))),
    ("tuning-configmap-and-emptydir", tuning_ws(lambda t: t.update(
        input={"volumeSource": {"configMap": {"name": "data"}}}, output={"volumeSource": {"emptyDir": {}}}))),
    ("count-at-the-maximum", {**example("phi_3"), "resource": {**example("phi_3")["resource"],
                                                               "count": MAX_NODE_COUNT}}),
    ("selector-forms", {**example("phi_3"), "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {
        "matchLabels": {"example.com/app": "phi-3", "a.b_c-d": "", "x": "A.b_C-9"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu", "x"]},
                             {"key": "kubernetes.io/os", "operator": "Exists"}]}}}),
]


@pytest.mark.parametrize("doc", [row[1] for row in ALLOWED], ids=[row[0] for row in ALLOWED])
def test_what_a_pod_in_the_namespace_may_do_is_allowed(doc: Doc) -> None:
    assert validate_workspace(doc) == []


@pytest.mark.parametrize("name", ["phi_3", "phi_3_with_adapters", "tuning_phi_3"])
def test_seed_examples_still_validate(name: str) -> None:
    assert validate_workspace(example(name)) == []


# --- the CRD carries the bounds ------------------------------------------------------------------


def _spec_nodes(node: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if not isinstance(node, dict) or node.get("x-kubernetes-preserve-unknown-fields"):
        return found
    found.append((path, node))
    for key, value in (node.get("properties") or {}).items():
        found += _spec_nodes(value, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += _spec_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _spec_nodes(node["additionalProperties"], f"{path}{{}}")
    return found


def test_the_crd_bounds_count_and_every_free_string_list_and_map_of_the_spec() -> None:
    for version in workspace_crd()["spec"]["versions"]:
        props = version["schema"]["openAPIV3Schema"]["properties"]
        assert props["resource"]["properties"]["count"]["maximum"] == MAX_NODE_COUNT
        assert props["resource"]["properties"]["count"]["minimum"] == 1
        unbounded = []
        for top in ("resource", "inference", "tuning"):
            for path, node in _spec_nodes(props[top], top):
                kind = node.get("type")
                if kind == "string" and "enum" not in node and "maxLength" not in node:
                    unbounded.append(path)
                if kind == "integer" and "maximum" not in node:
                    unbounded.append(path)
                if kind == "array" and "maxItems" not in node:
                    unbounded.append(path)
                if kind == "object" and isinstance(node.get("additionalProperties"), dict) \
                        and "maxProperties" not in node:
                    unbounded.append(path)
        assert unbounded == [], f"unbounded in the CRD: {unbounded}"


def test_an_overlong_string_is_refused_naming_the_field() -> None:
    doc = example("phi_3")
    doc["inference"]["preset"]["name"] = "x" * 1000
    errors = validate_workspace(doc)
    assert [e.path for e in errors] == ["inference.preset.name"]
    assert "at most 253 characters" in errors[0].message, errors[0].message


def test_the_machine_crd_bounds_every_string_of_its_spec() -> None:
    from kaito_core.api.crd import machine_crd

    spec = machine_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    unbounded = [path for path, node in _spec_nodes(spec, "spec")
                 if node.get("type") == "string" and "enum" not in node and "maxLength" not in node]
    assert unbounded == [], f"unbounded in the Machine CRD: {unbounded}"
