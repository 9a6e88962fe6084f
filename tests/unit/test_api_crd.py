"""The generated CRDs: committed files up to date, structural schemas, columns, CEL rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kaito_core.api import Messages
from kaito_core.api.crd import all_crds, check_crds, machine_crd, main, render_crd, workspace_crd, write_crds

DEPLOY = Path(__file__).parents[2] / "deploy" / "crds"


def test_committed_crds_match_the_models() -> None:
    stale = check_crds(DEPLOY)
    assert stale == [], (f"deploy/crds is stale ({', '.join(stale)}): "
                         "run python -m kaito_core.api.crd --write deploy/crds")


def test_check_detects_a_stale_file(tmp_path: Path) -> None:
    write_crds(tmp_path)
    assert check_crds(tmp_path) == [] and main(["--check", str(tmp_path)]) == 0
    target = tmp_path / "kaito.sh_workspaces.yaml"
    target.write_text(target.read_text().replace("shortNames", "shortnames"))
    assert check_crds(tmp_path) == ["kaito.sh_workspaces.yaml"]
    assert main(["--check", str(tmp_path)]) == 1


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            found += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


@pytest.mark.parametrize("crd", all_crds(), ids=lambda c: c["metadata"]["name"])
def test_schemas_are_structural(crd: dict[str, Any]) -> None:
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        text = render_crd(crd)
        assert "$ref" not in text and "$defs" not in text and "title:" not in text and "&id" not in text
        for path, node in _walk(schema):
            if node.get("x-kubernetes-int-or-string"):
                assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
                continue
            assert "anyOf" not in node and "oneOf" not in node, path
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
            assert node.get("default", "") is not None, path
            if "properties" in node:
                assert "additionalProperties" not in node, path


def test_workspace_crd_shape() -> None:
    crd = workspace_crd()
    spec = crd["spec"]
    assert spec["names"]["shortNames"] == ["wk", "wks"] and spec["names"]["categories"]
    assert spec["scope"] == "Namespaced" and spec["conversion"] == {"strategy": "None"}
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [
        ("v1alpha1", True, False), ("v1beta1", True, True)]
    alpha, beta = (v["schema"]["openAPIV3Schema"] for v in spec["versions"])
    assert alpha == beta  # same shape: conversion None is safe
    for version in spec["versions"]:
        assert version["subresources"] == {"status": {}}
        columns = version["additionalPrinterColumns"]
        assert [c["name"].upper() for c in columns if not c.get("priority")] == [
            "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
        assert [c["name"].upper() for c in columns if c.get("priority") == 1] == ["JOBSTARTED", "WORKSPACESUCCEEDED"]
    props = beta["properties"]
    assert set(props) == {"apiVersion", "kind", "metadata", "resource", "inference", "tuning", "status"}
    assert props["resource"]["properties"]["count"]["default"] == 1
    assert beta["required"] == ["resource"] and props["resource"]["required"] == ["labelSelector"]
    assert props["inference"]["properties"]["template"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["tuning"]["properties"]["input"]["properties"]["volumeSource"][
        "x-kubernetes-preserve-unknown-fields"] is True
    assert props["inference"]["properties"]["adapters"]["items"]["properties"]["strength"]["type"] == "string"
    assert props["tuning"]["properties"]["method"]["enum"] == ["lora", "qlora"]


def _rules(node: dict[str, Any]) -> dict[str, str]:
    return {r["rule"]: r["message"] for r in node.get("x-kubernetes-validations", [])}


def test_workspace_cel_rules() -> None:
    schema = workspace_crd()["spec"]["versions"][1]["schema"]["openAPIV3Schema"]
    root = _rules(schema)
    assert root["!(has(self.inference) && has(self.tuning))"] == Messages.INFERENCE_AND_TUNING
    assert root["has(self.inference) || has(self.tuning)"] == Messages.NEITHER_INFERENCE_NOR_TUNING
    inference = _rules(schema["properties"]["inference"])
    assert inference["!(has(self.preset) && has(self.template))"] == Messages.PRESET_AND_TEMPLATE
    immutable = [r for node in (schema["properties"]["resource"], schema["properties"]["inference"],
                                schema["properties"]["tuning"])
                 for r in node["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    assert sorted(r["fieldPath"] for r in immutable) == [
        ".instanceType", ".labelSelector", ".method", ".preset.name", ".preset.name"]
    assert all(r["message"] == Messages.IMMUTABLE for r in immutable)


def test_machine_crd_shape() -> None:
    crd = machine_crd()
    assert crd["spec"]["scope"] == "Cluster" and crd["metadata"]["name"] == "machines.kaito.sh"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")] == [
        "INSTANCE", "NODE", "READY", "AGE"]
    schema = version["schema"]["openAPIV3Schema"]
    assert "providerID" in schema["properties"]["status"]["properties"]
    assert _rules(schema["properties"]["spec"])["self == oldSelf"]
