"""The API reference, generated from the pydantic models (``python -m kaito_core.api.docs OUT.md``).

One table per kind: every field path, its type, default and the model's own
description, plus the rules the apiserver enforces (CEL). ``nox -s docs``
regenerates it; a test fails when the committed page differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kaito_core.api.machine import Machine
from kaito_core.api.workspace import Workspace

__all__ = ["render_reference"]

_SKIP = {"apiVersion", "kind", "metadata"}


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {**defs[schema["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in schema.items() if k != "$ref"}}
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:
        return {**_resolve(options[0], defs), **{k: v for k, v in schema.items() if k != "anyOf"}}
    return schema


def _type(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    schema = _resolve(schema, defs)
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), defs)}"
    if kind == "object" and "properties" not in schema:
        return "object"
    if "properties" in schema:
        return str(schema.get("title", "object"))
    if "anyOf" in schema:
        return " or ".join(_type(s, defs) for s in schema["anyOf"] if s.get("type") != "null")
    return str(kind or "any")


def _rows(schema: dict[str, Any], defs: dict[str, Any], prefix: str, required: set[str],
          *, out: list[str], depth: int = 0) -> None:
    for name, raw in schema.get("properties", {}).items():
        if depth == 0 and name in _SKIP:
            continue
        field = _resolve(raw, defs)
        path = f"{prefix}{name}"
        default = raw.get("default", field.get("default"))
        shown_default = "" if default is None else f"`{json.dumps(default)}`"
        description = " ".join(str(raw.get("description", field.get("description", ""))).split())
        marker = " (required)" if name in required else ""
        out.append(f"| `{path}`{marker} | {_type(raw, defs)} | {shown_default} | {description} |")
        if "properties" in field and depth < 4:
            _rows(field, defs, f"{path}.", set(field.get("required", [])), out=out, depth=depth + 1)
        items = _resolve(field.get("items", {}), defs) if field.get("type") == "array" else {}
        if "properties" in items and depth < 4:
            _rows(items, defs, f"{path}[].", set(items.get("required", [])), out=out, depth=depth + 1)


def _rules(schema: dict[str, Any], defs: dict[str, Any], out: list[str]) -> None:
    seen: set[str] = set()
    for rule in schema.get("x-kubernetes-validations", []):
        seen.add(rule["message"])
        out.append(f"- {rule['message']}")
    for definition in defs.values():
        for rule in definition.get("x-kubernetes-validations", []):
            text = f"`{rule.get('fieldPath', '')}`: {rule['message']}" if rule.get("fieldPath") else rule["message"]
            if text not in seen:
                seen.add(text)
                out.append(f"- {text}")


def _section(title: str, model: type[BaseModel], intro: str) -> list[str]:
    schema = model.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    out = [f"## {title}", "", intro, "", "| field | type | default | description |", "|---|---|---|---|"]
    _rows(schema, defs, "", set(schema.get("required", [])), out=out)
    rules: list[str] = []
    _rules(schema, defs, rules)
    if rules:
        out += ["", "Checked by the apiserver itself (CEL rules in the CRD):", "", *rules]
    return [*out, ""]


def render_reference() -> str:
    """The whole reference page as Markdown."""
    lines = [
        "# API reference",
        "",
        "Generated from the pydantic models by `python -m kaito_core.api.docs docs/reference/api.md`"
        " (`nox -s docs`); do not edit by hand.",
        "",
        *_section("Workspace (kaito.sh/v1alpha1, v1beta1)", Workspace,
                  "Namespaced. Both versions have this shape; `v1beta1` is stored. Exactly one of "
                  "`inference` and `tuning`."),
        *_section("Machine (kaito.sh/v1alpha1)", Machine,
                  "Cluster-scoped. One GPU node being provisioned; made by the Workspace reconciler, "
                  "driven by the Machine reconciler and a provisioner plugin."),
    ]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kaito_core.api.docs OUT.md", file=sys.stderr)
        return 2
    target = Path(args[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_reference())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
