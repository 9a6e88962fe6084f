"""The Workspace validator: one row per rule, each message naming the field and saying what to do."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_core.api import (
    ANNOTATION_BYPASS_RESOURCE_CHECKS,
    ANNOTATION_RUNTIME,
    FieldError,
    Messages,
    Rule,
    Workspace,
    WorkspaceValidationError,
    check_workspace,
    url_problem,
    validate_workspace,
)

EXAMPLES = Path(__file__).parents[2] / "examples"
Doc = dict[str, Any]


def example(name: str) -> Doc:
    data: Doc = yaml.safe_load((EXAMPLES / f"kaito_workspace_{name}.yaml").read_text())
    return data


def inference() -> Doc:
    return example("phi_3")


def adapters() -> Doc:
    return example("phi_3_with_adapters")


def tuning() -> Doc:
    return example("tuning_phi_3")


def with_(base: Callable[[], Doc], change: Callable[[Doc], Any]) -> Doc:
    doc = base()
    change(doc)
    return doc


def _adapter(name: str, strength: str = "0.5") -> Doc:
    return {"source": {"name": name, "image": f"r.example.com/{name}:1"}, "strength": strength}


# (id, document, expected rule, field path, message fragment)
INVALID: list[tuple[str, Doc, str, str, str]] = [
    ("unknown-preset", with_(inference, lambda d: d["inference"]["preset"].update(name="phi-3-mini")),
     Rule.UNKNOWN_PRESET, "inference.preset.name",
     "unknown preset 'phi-3-mini'; did you mean phi-3-mini-128k-instruct, phi-3-mini-4k-instruct"),
    ("unknown-instance-type", with_(inference, lambda d: d["resource"].update(instanceType="Standard_NC6_v3")),
     Rule.UNKNOWN_INSTANCE_TYPE, "resource.instanceType",
     "unknown GPU instance type 'Standard_NC6_v3'; did you mean Standard_NC6s_v3"),
    ("too-little-gpu-memory", with_(inference, lambda d: (
        d["resource"].update(instanceType="Standard_NC4as_T4_v3"),
        d["inference"]["preset"].update(name="phi-3-medium-4k-instruct"))),
     Rule.INSUFFICIENT_GPU_MEMORY, "resource.instanceType",
     "Standard_NC4as_T4_v3 has 16Gi GPU memory; phi-3-medium-4k-instruct needs 28Gi; try Standard_NC24ads_A100_v4"),
    ("too-few-gpus", with_(inference, lambda d: (
        d["resource"].update(instanceType="Standard_NC40ads_H100_v5"),
        d["inference"]["preset"].update(name="falcon-40b-instruct"))),
     Rule.INSUFFICIENT_GPU_COUNT, "resource.instanceType",
     "Standard_NC40ads_H100_v5 has 1 GPU; falcon-40b-instruct needs 2; try Standard_NC48ads_A100_v4"),
    ("tuning-gpu-memory", with_(tuning, lambda d: d["tuning"].update(method="lora")),
     Rule.INSUFFICIENT_GPU_MEMORY, "resource.instanceType",
     "Standard_NC6s_v3 has 16Gi GPU memory; phi-3-mini-128k-instruct needs 24Gi for lora tuning; "
     "try method qlora (needs 12Gi) or Standard_NV36ads_A10_v5"),
    ("inference-and-tuning", with_(inference, lambda d: d.update(tuning=tuning()["tuning"])),
     Rule.INFERENCE_AND_TUNING, "tuning", Messages.INFERENCE_AND_TUNING),
    ("neither-inference-nor-tuning", with_(inference, lambda d: d.pop("inference")),
     Rule.NEITHER_INFERENCE_NOR_TUNING, "", Messages.NEITHER_INFERENCE_NOR_TUNING),
    ("preset-and-template", with_(inference, lambda d: d["inference"].update(template={"spec": {}})),
     Rule.PRESET_AND_TEMPLATE, "inference.template", Messages.PRESET_AND_TEMPLATE),
    ("neither-preset-nor-template", with_(inference, lambda d: d["inference"].pop("preset")),
     Rule.NEITHER_PRESET_NOR_TEMPLATE, "inference", Messages.NEITHER_PRESET_NOR_TEMPLATE),
    ("too-many-adapters", with_(adapters, lambda d: d["inference"].update(
        adapters=[_adapter(f"a{i}") for i in range(11)])),
     Rule.TOO_MANY_ADAPTERS, "inference.adapters", "11 adapters given; at most 10 are allowed"),
    ("duplicate-adapter", with_(adapters, lambda d: d["inference"]["adapters"].append(_adapter("phi-3-adapter"))),
     Rule.DUPLICATE_ADAPTER, "inference.adapters[1].source.name",
     "duplicate adapter name 'phi-3-adapter' (also used by inference.adapters[0])"),
    ("strength-above-one", with_(adapters, lambda d: d["inference"]["adapters"][0].update(strength="1.5")),
     Rule.ADAPTER_STRENGTH, "inference.adapters[0].strength", "'1.5' is outside [0, 1]"),
    ("strength-negative", with_(adapters, lambda d: d["inference"]["adapters"][0].update(strength="-0.1")),
     Rule.ADAPTER_STRENGTH, "inference.adapters[0].strength", "'-0.1' is outside [0, 1]"),
    ("strength-not-a-number", with_(adapters, lambda d: d["inference"]["adapters"][0].update(strength="high")),
     Rule.ADAPTER_STRENGTH, "inference.adapters[0].strength", "'high' is not a number"),
    ("adapter-without-image", with_(adapters, lambda d: d["inference"]["adapters"][0]["source"].pop("image")),
     Rule.ADAPTER_SOURCE, "inference.adapters[0].source.image", "required: give the image"),
    ("input-two-sources", with_(tuning, lambda d: d["tuning"]["input"].update(image="r.example.com/data:1")),
     Rule.TUNING_INPUT, "tuning.input", "set exactly one of urls, image or volumeSource; got urls and image"),
    ("input-no-source", with_(tuning, lambda d: d["tuning"]["input"].pop("urls")),
     Rule.TUNING_INPUT, "tuning.input", "set exactly one of urls, image or volumeSource; none is set"),
    ("url-not-http", with_(tuning, lambda d: d["tuning"]["input"].update(urls=["ftp://example.com/d.parquet"])),
     Rule.INVALID_URL, "tuning.input.urls[0]", "'ftp://example.com/d.parquet' is not an http(s) URL"),
    ("url-loopback", with_(tuning, lambda d: d["tuning"]["input"].update(urls=["http://127.0.0.1:8080/d"])),
     Rule.FORBIDDEN_URL, "tuning.input.urls[0]", "points at a loopback address (127.0.0.1)"),
    ("url-private", with_(tuning, lambda d: d["tuning"]["input"].update(urls=["https://10.1.2.3/d"])),
     Rule.FORBIDDEN_URL, "tuning.input.urls[0]", "points at a private address (10.1.2.3)"),
    ("url-link-local", with_(tuning, lambda d: d["tuning"]["input"].update(urls=["http://169.254.1.1/d"])),
     Rule.FORBIDDEN_URL, "tuning.input.urls[0]", "points at a link-local address (169.254.1.1)"),
    ("url-metadata", with_(tuning, lambda d: d["tuning"]["input"].update(
        urls=["http://169.254.169.254/metadata/instance"])),
     Rule.FORBIDDEN_URL, "tuning.input.urls[0]", "points at a cloud metadata address (169.254.169.254)"),
    ("url-metadata-name", with_(tuning, lambda d: d["tuning"]["input"].update(
        urls=["http://metadata.google.internal/computeMetadata/v1/"])),
     Rule.FORBIDDEN_URL, "tuning.input.urls[0]", "points at 'metadata.google.internal'"),
    ("url-localhost", with_(tuning, lambda d: d["tuning"]["input"].update(urls=["http://localhost/d"])),
     Rule.FORBIDDEN_URL, "tuning.input.urls[0]", "points at 'localhost'"),
    ("output-image-without-secret", with_(tuning, lambda d: d["tuning"]["output"].pop("imagePushSecret")),
     Rule.OUTPUT_PUSH_SECRET, "tuning.output.imagePushSecret",
     "required with tuning.output.image; name a Secret in this namespace"),
    ("qlora-on-preset-without-tuning", with_(tuning, lambda d: (
        d["resource"].update(instanceType="Standard_NC96ads_A100_v4"),
        d["tuning"]["preset"].update(name="falcon-40b"))),
     Rule.TUNING_NOT_SUPPORTED, "tuning.preset.name", "falcon-40b does not support tuning (qlora)"),
    ("gated-without-secret", with_(inference, lambda d: (
        d["resource"].update(instanceType="Standard_NC24ads_A100_v4"),
        d["inference"]["preset"].update(name="llama-3.1-8b-instruct"))),
     Rule.GATED_PRESET, "inference.preset.presetOptions.modelAccessSecret",
     "llama-3.1-8b-instruct is gated on Hugging Face"),
    ("private-without-image", with_(inference, lambda d: d["inference"]["preset"].update(accessMode="private")),
     Rule.PRIVATE_IMAGE_REQUIRED, "inference.preset.presetOptions.image", "required when accessMode is private"),
    ("unknown-runtime", with_(inference, lambda d: d["metadata"].update(annotations={ANNOTATION_RUNTIME: "tgi"})),
     Rule.UNKNOWN_RUNTIME, f"metadata.annotations[{ANNOTATION_RUNTIME}]", "unknown runtime 'tgi'"),
    ("tuning-without-preset", with_(tuning, lambda d: d["tuning"].pop("preset")),
     Rule.TUNING_PRESET_REQUIRED, "tuning.preset", "required: name the preset model to tune"),
    ("no-instance-type", with_(inference, lambda d: (d["resource"].pop("instanceType"),
                                                     d["resource"].update(labelSelector={}))),
     Rule.INSTANCE_TYPE_REQUIRED, "resource.instanceType", "required unless resource.labelSelector picks"),
    ("bad-name", with_(inference, lambda d: d["metadata"].update(name="1-phi")),
     Rule.INVALID_NAME, "metadata.name", "'1-phi' is not a valid Workspace name"),
    ("wrong-type", with_(inference, lambda d: d["resource"].update(count="two")),
     Rule.SCHEMA, "resource.count", "must be a valid integer"),
    ("missing-label-selector", with_(inference, lambda d: d["resource"].pop("labelSelector")),
     Rule.SCHEMA, "resource.labelSelector", "required field is missing"),
]

# (id, old, new, path)
IMMUTABLE: list[tuple[str, Doc, Doc, str]] = [
    ("instanceType", inference(), with_(inference, lambda d: d["resource"].update(instanceType="Standard_NC12s_v3")),
     "resource.instanceType"),
    ("labelSelector", inference(), with_(inference, lambda d: d["resource"].update(
        labelSelector={"matchLabels": {"apps": "other"}})), "resource.labelSelector"),
    ("inference.preset.name", inference(), with_(inference, lambda d: d["inference"]["preset"].update(
        name="phi-3-mini-128k-instruct")), "inference.preset.name"),
    ("tuning.method", with_(tuning, lambda d: d["resource"].update(instanceType="Standard_NC24ads_A100_v4")),
     with_(tuning, lambda d: (d["resource"].update(instanceType="Standard_NC24ads_A100_v4"),
                              d["tuning"].update(method="lora"))), "tuning.method"),
    ("tuning.preset.name", tuning(), with_(tuning, lambda d: d["tuning"]["preset"].update(
        name="phi-3-mini-4k-instruct")), "tuning.preset.name"),
]


@pytest.mark.parametrize("name", ["phi_3", "phi_3_with_adapters", "tuning_phi_3"])
def test_seed_examples_are_valid(name: str) -> None:
    assert validate_workspace(example(name)) == []
    assert isinstance(check_workspace(example(name)), Workspace)


@pytest.mark.parametrize(("doc", "rule", "path", "fragment"), [row[1:] for row in INVALID],
                         ids=[row[0] for row in INVALID])
def test_invalid_workspace_is_reported_with_field_and_advice(doc: Doc, rule: str, path: str, fragment: str) -> None:
    errors = validate_workspace(doc)
    matching = [e for e in errors if e.rule == rule]
    assert matching, f"no {rule} error in {errors}"
    assert matching[0].path == path
    assert fragment in matching[0].message, matching[0].message
    assert str(matching[0]) == (f"{path}: {matching[0].message}" if path else matching[0].message)
    with pytest.raises(WorkspaceValidationError) as raised:
        check_workspace(doc)
    assert fragment in str(raised.value)
    assert raised.value.errors == errors


@pytest.mark.parametrize(("old", "new", "path"), [row[1:] for row in IMMUTABLE], ids=[row[0] for row in IMMUTABLE])
def test_immutable_fields(old: Doc, new: Doc, path: str) -> None:
    assert validate_workspace(new) == []  # valid on its own
    errors = validate_workspace(new, old)
    assert errors == [FieldError(path, Messages.IMMUTABLE, Rule.IMMUTABLE)]
    assert validate_workspace(old, copy.deepcopy(old)) == []


def test_switching_between_inference_and_tuning_is_refused() -> None:
    new = with_(inference, lambda d: d["resource"].update(labelSelector=tuning()["resource"]["labelSelector"]))
    errors = validate_workspace(new, tuning())
    assert FieldError("", Messages.SWITCH_INFERENCE_TUNING, Rule.SWITCH_INFERENCE_TUNING) in errors


def test_every_problem_is_reported_at_once() -> None:
    doc = with_(tuning, lambda d: (d["tuning"]["output"].pop("imagePushSecret"),
                                   d["tuning"]["input"].update(urls=["http://localhost/a", "file:///etc/passwd"])))
    rules = [e.rule for e in validate_workspace(doc)]
    assert rules == [Rule.FORBIDDEN_URL, Rule.INVALID_URL, Rule.OUTPUT_PUSH_SECRET]


def test_gated_preset_with_secret_and_template_inference_are_fine() -> None:
    gated = with_(inference, lambda d: (
        d["resource"].update(instanceType="Standard_NC24ads_A100_v4"),
        d["inference"]["preset"].update(name="llama-3.1-8b-instruct",
                                        presetOptions={"modelAccessSecret": "hf-token"})))
    assert validate_workspace(gated) == []
    template = with_(inference, lambda d: d.update(inference={"template": {"spec": {"containers": []}}}))
    assert validate_workspace(template) == []


def test_bypass_annotation_skips_the_sku_checks() -> None:
    doc = with_(inference, lambda d: (d["resource"].update(instanceType="my-onprem-box"),
                                      d["metadata"].update(annotations={ANNOTATION_BYPASS_RESOURCE_CHECKS: "true"})))
    assert validate_workspace(doc) == []


def test_preferred_nodes_make_instance_type_optional_and_lookup_ignores_case() -> None:
    doc = with_(inference, lambda d: d["resource"].update(preferredNodes=["gpu-1"]))
    del doc["resource"]["instanceType"]
    assert validate_workspace(doc) == []
    lower = with_(inference, lambda d: d["resource"].update(instanceType="standard_nc6s_v3"))
    assert validate_workspace(lower) == []


@pytest.mark.parametrize("garbage", [None, 3, "text", [], {"resource": []}, {"resource": {"labelSelector": 1}}])
def test_garbage_returns_errors_and_never_raises(garbage: Any) -> None:
    errors = validate_workspace(garbage)
    assert errors and all(isinstance(e, FieldError) for e in errors)


@pytest.mark.parametrize(("url", "problem"), [
    ("https://huggingface.co/datasets/x/resolve/main/a.parquet", None),
    ("http://93.184.216.34/data.json", None),
    ("https://[2606:4700::1111]/d", None),
    ("HTTPS://Example.COM/d", None),
    ("file:///etc/passwd", "not an http(s) URL"),
    ("s3://bucket/key", "not an http(s) URL"),
    ("https:///nohost", "has no host"),
    ("http://[::1]/d", "loopback"),
    ("http://127.1/d", "loopback"),
    ("http://0x7f000001/d", "loopback"),
    ("http://[::ffff:127.0.0.1]/d", "loopback"),
    ("http://0.0.0.0/d", "unspecified"),
    ("http://192.168.1.10/d", "private"),
    ("http://172.16.0.1/d", "private"),
    ("http://[fd00::1]/d", "private"),
    ("http://[fe80::1%25eth0]/d", "link-local"),
    ("http://100.64.0.1/d", "non-public"),
    ("http://100.100.100.200/latest/meta-data", "cloud metadata"),
    ("http://[fd00:ec2::254]/latest", "cloud metadata"),
    ("http://LOCALHOST./d", "'localhost'"),
    ("http://api.localhost/d", "'api.localhost'"),
    ("http://instance-data/latest", "'instance-data'"),
    ("http://minio.storage.svc.cluster.local:9000/d", "in-cluster"),
    ("http://kubernetes.default.svc/api", "in-cluster"),
    ("http://[::1/d", "not a valid URL"),
    ("http://example.com:99999/d", "not a valid URL"),
])
def test_url_rules(url: str, problem: str | None) -> None:
    found = url_problem(url)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found[1], found
