"""Kaito's own validation cases (api/v1beta1/workspace_validation_test.go, v0.12), translated into Workspace
documents and run through the one validator; where Kaito and kaito-core differ on purpose, the test says why."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kaito_presets import default_catalog

from kaito_core.api import Rule, Workspace, validate_workspace
from kaito_core.controllers.workspace import WorkspaceSettings
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.inference import inference_workload

Doc = dict[str, Any]
A100 = "Standard_NC24ads_A100_v4"


def ws(**fields: Any) -> Doc:
    doc: Doc = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                "metadata": {"name": "ws", "namespace": "default"},
                "resource": {"instanceType": A100, "labelSelector": {"matchLabels": {"apps": "x"}}}}
    doc.update(copy.deepcopy(fields))
    return doc


def tuning(input_image: str = "kaito.azurecr.io/input:0.0.0",
           output_image: str = "kaito.azurecr.io/output:0.0.0") -> Doc:
    return {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
            "input": {"name": "valid-input", "image": input_image},
            "output": {"image": output_image, "imagePushSecret": "secret"}}


def inference(*adapters: Doc) -> Doc:
    spec: Doc = {"preset": {"name": "phi-3-mini-4k-instruct"}}
    if adapters:
        spec["adapters"] = list(adapters)
    return spec


def rules(doc: Doc) -> dict[str, tuple[str, str]]:
    return {e.path: (e.rule, e.message) for e in validate_workspace(doc)}


# (Kaito's case name, document, field, rule, message fragment)
REFUSED = [
    ("Tuning validation with multinode",
     ws(resource={"count": 2, "instanceType": A100, "labelSelector": {"matchLabels": {"apps": "x"}}},
        tuning=tuning()),
     "resource.count", Rule.TUNING_MULTI_NODE, "tuning runs on one node"),
    ("Invalid - matchLabels only contains reserved KAITO labels",
     ws(resource={"labelSelector": {"matchLabels": {"kaito.sh/workspace": "ws1",
                                                    "kaito.sh/workspacenamespace": "ns1"}}},
        inference=inference()),
     "resource.labelSelector.matchLabels", Rule.INVALID_LABEL_SELECTOR, "at least one label not reserved"),
    ("Unsupported node image family annotation",
     ws(metadata={"name": "ws", "annotations": {"kaito.sh/node-image-family": "CustomLinux"}}, inference=inference()),
     "metadata.annotations[kaito.sh/node-image-family]", Rule.UNKNOWN_NODE_IMAGE_FAMILY, "'CustomLinux'"),
    ("Adapter with unsupported URLs source",
     ws(inference=inference({"source": {"name": "a", "urls": ["https://example.com/adapter.bin"]}})),
     "inference.adapters[0].source.urls", Rule.ADAPTER_SOURCE, "URLs are not supported"),
    ("Missing both Image and Volume", ws(inference=inference({"source": {"name": "a"}, "strength": "0.5"})),
     "inference.adapters[0].source.image", Rule.ADAPTER_SOURCE, "or a volumeSource"),
    # Stricter on purpose, and the message says why:
    ("Invalid SKU", ws(resource={"instanceType": "Standard_invalid_sku",
                                 "labelSelector": {"matchLabels": {"apps": "x"}}}, inference=inference()),
     "resource.instanceType", Rule.UNKNOWN_INSTANCE_TYPE, "for nodes the catalog does not know"),
    ("Name with invalid characters", ws(metadata={"name": "phi-3.5-mini"}, inference=inference()),
     "metadata.name", Rule.INVALID_NAME, "the inference Service is named after the Workspace"),
]


@pytest.mark.parametrize(("case", "doc", "field", "rule", "fragment"), REFUSED, ids=[c[0] for c in REFUSED])
def test_kaito_refuses_and_so_do_we(case: str, doc: Doc, field: str, rule: str, fragment: str) -> None:
    found = rules(doc)
    assert field in found, (case, found)
    assert found[field][0] == rule and fragment in found[field][1], found[field]


ACCEPTED = [
    ("Valid with volume adapters/vllm", ws(inference=inference(*[
        {"source": {"name": f"adapter-{i}",
                    "volumeSource": {"persistentVolumeClaim": {"claimName": f"pvc-adapter-{i}"}}}}
        for i in (1, 2)]))),
    ("Image without URL Specified", ws(tuning=tuning(input_image="data-image:latest"))),
    ("Image without Tag Specified", ws(tuning=tuning(output_image="aimodels.azurecr.io/data-image"))),
    ("Tuning validation with single node", ws(tuning=tuning())),
    ("node image family, any case", ws(
        metadata={"name": "ws", "annotations": {"kaito.sh/node-image-family": "AzureLinux"}}, inference=inference())),
    ("reserved label next to one of the user's", ws(
        resource={"instanceType": A100, "labelSelector": {"matchLabels": {"kaito.sh/workspace": "ws", "apps": "x"}}},
        inference=inference())),
    ("BYO by labels: no instanceType", ws(resource={"labelSelector": {"matchLabels": {"apps": "x"}}},
                                          inference=inference())),
]


@pytest.mark.parametrize(("case", "doc"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_kaito_accepts_and_so_do_we(case: str, doc: Doc) -> None:
    assert validate_workspace(doc) == []


def test_byo_without_instance_type_needs_a_selector_of_the_users_own() -> None:
    for selector in ({}, {"matchLabels": {"kaito.sh/machine": "m"}}):
        found = rules(ws(resource={"labelSelector": selector}, inference=inference()))
        assert found["resource.instanceType"][0] == Rule.INSTANCE_TYPE_REQUIRED
        assert "nvidia.com/gpu.memory" in found["resource.instanceType"][1]


# Kaito refuses these (reference.ParseDockerRef); kaito-core accepts them on purpose: the seed's own examples
# carry upper-case placeholders (ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1) and must apply unchanged. A
# reference no registry serves fails where it is pulled, and that failure reaches the Workspace's conditions.
KAITO_REFUSES_WE_ACCEPT = [
    ("Invalid Input Source Casing", ws(tuning=tuning(input_image="kaito.azurecr.io/INPUT:0.0.0"))),
    ("Invalid Output Destination Casing", ws(tuning=tuning(output_image="kaito.azurecr.io/OUTPUT:0.0.0"))),
    ("Invalid image (DataSource)", ws(tuning=tuning(input_image="!ValidImage"))),
    ("Invalid image (DataDestination)", ws(tuning=tuning(output_image="!ValidImage"))),
    ("seed adapter placeholder", ws(inference=inference(
        {"source": {"name": "a", "image": "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1"}}))),
]


@pytest.mark.parametrize(("case", "doc"), KAITO_REFUSES_WE_ACCEPT, ids=[c[0] for c in KAITO_REFUSES_WE_ACCEPT])
def test_image_references_are_not_judged_at_admission(case: str, doc: Doc) -> None:
    assert validate_workspace(doc) == []


def test_a_volume_adapter_is_mounted_from_its_volume_and_not_pulled() -> None:
    doc = ws(inference=inference(
        {"source": {"name": "vol", "volumeSource": {"persistentVolumeClaim": {"claimName": "pvc-a"}}},
         "strength": "0.5"},
        {"source": {"name": "img", "image": "reg.io/img:1"}}))
    workspace = Workspace.model_validate(doc)
    catalog = default_catalog()
    ctx = BuildContext(ws=workspace, settings=WorkspaceSettings(), preset=catalog.find_model("phi-3-mini-4k-instruct"),
                       sku=catalog.find_sku(A100), nodes=["n0"])
    spec = inference_workload(ctx)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"] if c["name"].startswith("adapter-")] == ["adapter-img"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["adapter-src-vol"] == {"name": "adapter-src-vol", "persistentVolumeClaim": {"claimName": "pvc-a"}}
    mounts = spec["containers"][0]["volumeMounts"]
    assert {"name": "adapter-src-vol", "mountPath": "/mnt/adapter/vol", "readOnly": True} in mounts
    assert {"name": "adapter-volume", "mountPath": "/mnt/adapter"} in mounts
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["vol"] == "0.5"
