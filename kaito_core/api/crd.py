"""CustomResourceDefinitions generated from the pydantic models.

The JSON schema pydantic produces is made *structural* (what the apiserver
requires): ``$ref``s inlined, ``anyOf [X, null]`` collapsed to ``X``, titles and
null defaults dropped, a ``type`` everywhere, ``dict[str, Any]`` turned into
``x-kubernetes-preserve-unknown-fields``. Model-level ``json_schema_extra`` carries
the CEL rules.

    python -m kaito_core.api.crd --write deploy/crds   # regenerate
    python -m kaito_core.api.crd --check deploy/crds   # exit 1 if they differ
    python -m kaito_core.api.crd                       # print them
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kaito_core.api.common import KubeModel
from kaito_core.api.conditions import MachineConditionType, WorkspaceConditionType
from kaito_core.api.constants import (
    CATEGORY,
    GROUP,
    LABEL_WORKSPACE,
    MACHINE_KIND,
    MACHINE_PLURAL,
    MACHINE_SINGULAR,
    MACHINE_VERSION,
    STORAGE_VERSION,
    WORKSPACE_KIND,
    WORKSPACE_PLURAL,
    WORKSPACE_SHORT_NAMES,
    WORKSPACE_SINGULAR,
    WORKSPACE_VERSIONS,
)
from kaito_core.api.machine import Machine
from kaito_core.api.workspace import Workspace

__all__ = [
    "all_crds",
    "check_crds",
    "crd_filename",
    "machine_crd",
    "main",
    "openapi_schema",
    "render_crd",
    "workspace_crd",
    "write_crds",
]

_BASE_DOCS = {(KubeModel.__doc__ or "").strip(), (BaseModel.__doc__ or "").strip()}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = _structural(defs[ref.rsplit("/", 1)[-1]], defs)
        node = {**target, **{k: v for k, v in node.items() if k not in ("title",)}}
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"cannot make a structural schema of anyOf {node['anyOf']!r}")
        inner = _structural(branches[0], defs)
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**inner, **outer}
    if node.get("default", 0) is None:
        del node["default"]
    node.pop("title", None)
    if node.get("description", "").strip() in _BASE_DOCS:
        node.pop("description")
    if "description" in node:
        node["description"] = " ".join(node["description"].split())
    extra = node.get("additionalProperties")
    if extra is True:
        del node["additionalProperties"]
        if "properties" not in node:
            node["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(extra, dict):
        node["additionalProperties"] = _structural(extra, defs)
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
        node.setdefault("type", "object")
    if "properties" in node:
        node["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
    if "items" in node:
        node["items"] = _structural(node["items"], defs)
    if "enum" in node:
        node.setdefault("type", "string")
    return _ordered(node)


_KEY_ORDER = ("description", "type", "format", "enum", "default", "minimum", "maximum", "maxLength", "maxItems",
              "maxProperties", "items", "additionalProperties", "properties", "required")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in _KEY_ORDER if k in node] + sorted(k for k in node if k not in _KEY_ORDER)
    return {k: node[k] for k in keys}


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of a root model (Workspace or Machine)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs)
    props = schema["properties"]
    props["apiVersion"] = {
        "description": "APIVersion defines the versioned schema of this representation of an object.",
        "type": "string",
    }
    props["kind"] = {"description": "Kind is a string value representing the REST resource.", "type": "string"}
    props["metadata"] = {"type": "object"}
    return schema


def _condition_column(name: str, condition: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": name, "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
    }
    if priority:
        column["priority"] = priority
    return column


def workspace_crd() -> dict[str, Any]:
    schema = openapi_schema(Workspace)
    columns = [
        {"name": "Instance", "type": "string", "jsonPath": ".resource.instanceType"},
        _condition_column("ResourceReady", WorkspaceConditionType.RESOURCE_READY),
        _condition_column("InferenceReady", WorkspaceConditionType.INFERENCE_READY),
        _condition_column("JobStarted", WorkspaceConditionType.JOB_STARTED, priority=1),
        _condition_column("WorkspaceSucceeded", WorkspaceConditionType.WORKSPACE_SUCCEEDED, priority=1),
        _condition_column("WorkspaceReady", WorkspaceConditionType.WORKSPACE_READY),
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    versions: list[dict[str, Any]] = [
        {
            "name": version,
            "served": True,
            "storage": version == STORAGE_VERSION,
            "schema": {"openAPIV3Schema": copy.deepcopy(schema)},
            "subresources": {"status": {}},
            "additionalPrinterColumns": copy.deepcopy(columns),
        }
        for version in WORKSPACE_VERSIONS
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{WORKSPACE_PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": WORKSPACE_KIND,
                "listKind": f"{WORKSPACE_KIND}List",
                "plural": WORKSPACE_PLURAL,
                "singular": WORKSPACE_SINGULAR,
                "shortNames": list(WORKSPACE_SHORT_NAMES),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            # Both versions have the same schema: the apiserver only rewrites apiVersion.
            "conversion": {"strategy": "None"},
            "versions": versions,
        },
    }


def machine_crd() -> dict[str, Any]:
    schema = openapi_schema(Machine)
    columns = [
        {"name": "Instance", "type": "string", "jsonPath": ".spec.instanceType"},
        {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
        _condition_column("Ready", MachineConditionType.READY),
        {"name": "Workspace", "type": "string", "priority": 1,
         "jsonPath": ".metadata.labels." + LABEL_WORKSPACE.replace(".", "\\.")},
        {"name": "Provisioner", "type": "string", "priority": 1, "jsonPath": ".spec.provisioner"},
        {"name": "ID", "type": "string", "priority": 1, "jsonPath": ".status.providerID"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{MACHINE_PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": MACHINE_KIND,
                "listKind": f"{MACHINE_KIND}List",
                "plural": MACHINE_PLURAL,
                "singular": MACHINE_SINGULAR,
                "categories": [CATEGORY],
            },
            "scope": "Cluster",
            "versions": [{
                "name": MACHINE_VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            }],
        },
    }


def crd_filename(crd: dict[str, Any]) -> str:
    """controller-gen's naming: ``<group>_<plural>.yaml``."""
    return f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml"


def all_crds() -> list[dict[str, Any]]:
    return [workspace_crd(), machine_crd()]


_HEADER = "# Generated by `python -m kaito_core.api.crd --write deploy/crds` from kaito_core.api. Do not edit.\n"


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_crd(crd: dict[str, Any]) -> str:
    return _HEADER + yaml.dump(crd, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def write_crds(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for crd in all_crds():
        path = folder / crd_filename(crd)
        path.write_text(render_crd(crd), encoding="utf-8")
        written.append(path)
    return written


def check_crds(folder: Path) -> list[str]:
    """Names of the files in ``folder`` that are missing or differ from what the models generate."""
    stale = []
    for crd in all_crds():
        path = folder / crd_filename(crd)
        if not path.exists() or path.read_text(encoding="utf-8") != render_crd(crd):
            stale.append(path.name)
    return stale


def main(argv: list[str] | None = None) -> int:
    summary = (__doc__ or "").strip().splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m kaito_core.api.crd", description=summary)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="DIR", type=Path, help="write the CRDs into DIR")
    group.add_argument("--check", metavar="DIR", type=Path, help="exit 1 if the CRDs in DIR are stale")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_crds(args.write):
            print(f"wrote {path}")
        return 0
    if args.check:
        stale = check_crds(args.check)
        if stale:
            print(f"stale CRDs in {args.check}: {', '.join(stale)}; run python -m kaito_core.api.crd "
                  f"--write {args.check}", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write("---\n".join(render_crd(crd) for crd in all_crds()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
